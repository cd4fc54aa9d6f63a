"""A real Echovids deployment for tests: `echovids serve` in a subprocess, on free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    data_dir: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    cwd: Path = ROOT  # `python -m` puts the cwd first on sys.path: a stack of another checkout runs from it

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        self.log_path = self.data_dir.parent / f"serve-{self.port}.log"
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "echovids.cli", "serve"],
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"echovids serve exited:\n{self.log_path.read_text()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=3).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"stack not ready in {timeout} s:\n{self.log_path.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "echovids.cli", *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def search(self, path: Path, k: int = 5, timeout: float = 60.0) -> dict:
        """POST a query file and poll until the job ends; returns the job record."""
        with path.open("rb") as f:
            answer = httpx.post(
                f"{self.url}/v1/searches", files={"file": (path.name, f, "audio/wav")}, data={"k": str(k)}, timeout=30
            )
        assert answer.status_code == 202, answer.text
        location = answer.headers["Location"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            wait = min(30.0, max(0.0, deadline - time.monotonic()))
            job = httpx.get(f"{self.url}{location}", params={"wait": wait}, timeout=wait + 10).json()
            if job["status"] in ("done", "failed"):
                return job
        raise AssertionError(f"search still {job['status']} after {timeout} s")


def make_stack(data_dir: Path, redis_url: str | None, **extra_env: str) -> Stack:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHOVIDS_")}
    port = free_port()
    env.update(
        ECHOVIDS_DATA_DIR=str(data_dir),
        ECHOVIDS_PORT=str(port),
        ECHOVIDS_MODEL_DIR=os.environ.get("ECHOVIDS_MODEL_DIR", str(ROOT.parent / "shared" / "models")),
        PYTHONUNBUFFERED="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        **extra_env,
    )
    if redis_url:
        env["ECHOVIDS_REDIS_URL"] = redis_url
    return Stack(data_dir=data_dir, port=port, env=env)
