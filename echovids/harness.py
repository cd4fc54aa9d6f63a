"""The harness the tests, the benchmarks and the evaluation share: a deployment in a subprocess, a client for it.

`Stack` runs `echovids serve` on a free port and waits until /readyz says every service has a consumer;
`search_and_wait` posts a recording and long-polls its job; `write_wav` / `wav_bytes` make test audio;
`machine_info` says what a figure was measured on; `missing_modules` checks a benchmark's extras before it starts.

It lives in the shared package, not in benchmarks/ or tests/, because the lowest layer needs part of it (the
embedded Redis takes a `free_port`) and the layers above (tests, benchmarks, evaluation) all use it, none of which
should import another. It imports no service: the stack is started as a subprocess through the CLI.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import signal
import subprocess
import sys
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from echovids.audio import SAMPLE_RATE
from echovids.redis_conn import free_port
from echovids.schemas import JobStatus

# The checkout the package is imported from (a stack runs from here, so ./.env and relative paths are the repo's).
ROOT = Path(__file__).resolve().parents[1]
# A long poll's wait, under the gateway's own cap (services/gateway/routers/searches.py, MAX_WAIT_S).
LONG_POLL_S = 30.0
SETTLED = (JobStatus.done, JobStatus.failed)

__all__ = ["ROOT", "Stack", "free_port", "machine_info", "make_stack", "search_and_wait", "wav_bytes", "write_wav"]


# -- audio ------------------------------------------------------------------------------------------------------
def _wav(target: Path | io.BytesIO, samples: np.ndarray, sr: int, sample_width: int, channels: int) -> None:
    x = np.clip(samples, -1.0, 1.0)  # in the samples' own float type: the same bytes as before for float32 audio
    if x.ndim == 1:
        x = np.repeat(x[:, None], channels, axis=1)
    if sample_width == 1:
        data = ((x * 127) + 128).astype(np.uint8).tobytes()
    elif sample_width == 3:
        ints = (x * (2**23 - 1)).astype("<i4")
        data = ints.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        dtype = {2: "<i2", 4: "<i4"}[sample_width]
        data = (x * (2 ** (8 * sample_width - 1) - 1)).astype(dtype).tobytes()
    with wave.open(str(target) if isinstance(target, Path) else target, "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(sample_width)
        w.setframerate(sr)
        w.writeframes(data)


def write_wav(path: Path, samples: np.ndarray, sr: int = SAMPLE_RATE, sample_width: int = 2, channels: int = 1) -> Path:
    """Write PCM WAV (8/16/24/32-bit integer) of samples in [-1, 1], duplicating mono into ``channels``."""
    _wav(path, samples, sr, sample_width, channels)
    return path


def wav_bytes(samples: np.ndarray, sr: int = SAMPLE_RATE, sample_width: int = 2, channels: int = 1) -> bytes:
    """The bytes of :func:`write_wav`'s file, without a file."""
    buffer = io.BytesIO()
    _wav(buffer, samples, sr, sample_width, channels)
    return buffer.getvalue()


# -- the machine ------------------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """What a figure was measured on; the load says whether the machine was otherwise idle."""
    cpu = ""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.lower().startswith("model name")
        )
    memory_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_gb = round(int(Path("/proc/meminfo").read_text().split()[1]) / 2**20, 1)
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return {
        "cpu": cpu or platform.processor(),
        "nproc": len(usable),
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def missing_modules(needs: dict[str, str]) -> dict[str, str]:
    """Of ``needs`` (module -> the pyproject extra that installs it), the modules that are not installed."""
    return {module: extra for module, extra in sorted(needs.items()) if find_spec(module) is None}


def install_hint(missing: dict[str, str]) -> str:
    """The pip command that installs the extras of ``missing``."""
    extras = ",".join(sorted(set(missing.values())))
    return f"pip install -e '.[{extras}]'" + (" (or make bench-deps)" if "bench" in extras.split(",") else "")


# -- searching --------------------------------------------------------------------------------------------------
def submit_search(
    client: httpx.Client,
    content: bytes,
    file_name: str,
    k: int | None = None,
    media_type: str | None = "application/octet-stream",
    filters: dict[str, Any] | None = None,
) -> httpx.Response:
    """POST /v1/searches (202 + Location when accepted); without ``k`` the gateway's default applies, without
    ``media_type`` httpx names the type from the file name. ``filters``: form fields (labels, source, ...)."""
    upload = (file_name, content) if media_type is None else (file_name, content, media_type)
    # the client's own timeout
    return client.post("/v1/searches", files={"file": upload}, data=_search_fields(k, filters))


def submit_text_search(
    client: httpx.Client, text: str, k: int | None = None, filters: dict[str, Any] | None = None
) -> httpx.Response:
    """POST /v1/searches with a description (a plain form: no file)."""
    fields = {**_search_fields(k, filters), "text": text}
    return client.post("/v1/searches", data=fields)


def _search_fields(k: int | None, filters: dict[str, Any] | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"k": str(k)} if k is not None else {}
    for name, value in (filters or {}).items():
        if value is not None and value != []:
            fields[name] = [str(v) for v in value] if isinstance(value, list) else str(value)
    return fields


def wait_for_job(
    client: httpx.Client, location: str, timeout_s: float, long_poll: bool = True, poll_s: float = 0.25
) -> dict[str, Any]:
    """The job once done or failed, or as it stands after ``timeout_s``.

    A long poll (the gateway answers the moment the job settles) unless ``long_poll`` is off, for a service
    that offers none: then plain reads every ``poll_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        left = max(0.0, deadline - time.monotonic())
        if long_poll:
            wait = min(LONG_POLL_S, left)
            job: dict[str, Any] = client.get(location, params={"wait": wait}, timeout=wait + 30).json()
        else:
            job = client.get(location).json()
        if job["status"] in SETTLED or time.monotonic() >= deadline:
            return job
        if not long_poll:
            time.sleep(poll_s)


def text_search_and_wait(
    client: httpx.Client,
    text: str,
    k: int | None = None,
    timeout_s: float = 60.0,
    filters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Submit a search by description and wait for its job; raises if it is not accepted."""
    answer = accepted(lambda: submit_text_search(client, text, k, filters), timeout_s)
    return wait_for_job(client, answer.headers["Location"], timeout_s)


def search_and_wait(
    client: httpx.Client,
    content: bytes,
    file_name: str,
    k: int | None = None,
    timeout_s: float = 60.0,
    media_type: str | None = "audio/wav",
) -> dict[str, Any]:
    """Submit a search and wait for its job (as it stands after ``timeout_s``); raises if it is not accepted."""
    answer = accepted(lambda: submit_search(client, content, file_name, k, media_type), timeout_s)
    return wait_for_job(client, answer.headers["Location"], timeout_s)


def accepted(submit: Callable[[], httpx.Response], timeout_s: float) -> httpx.Response:
    """``submit()``'s 202, waiting out the per-client rate limit (a 429's Retry-After) for up to ``timeout_s``, as
    a polite client does; raises on any other refusal."""
    deadline = time.monotonic() + timeout_s
    answer = submit()
    while answer.status_code == 429 and time.monotonic() < deadline:
        time.sleep(min(float(answer.headers.get("Retry-After", "1")), max(0.0, deadline - time.monotonic())))
        answer = submit()
    if answer.status_code != 202:
        raise RuntimeError(f"search refused: {answer.status_code} {answer.text[:300]}")
    return answer


# -- a deployment -----------------------------------------------------------------------------------------------
@dataclass
class Stack:
    """`echovids serve` in a subprocess with its own data dir and port (embedded Redis unless ``redis_url``)."""

    data_dir: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    ready_s: float | None = None  # from the start until /readyz first answered 200
    cwd: Path = ROOT  # `python -m` puts the cwd first on sys.path: a stack of another checkout runs from it

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        """Start it and wait until /readyz answers 200 (every service consumes its queues)."""
        self.log_path = self.log_path or self.data_dir.parent / f"serve-{self.port}.log"
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "echovids.cli", "serve"],
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started = time.monotonic()
        deadline = started + timeout
        self.ready_s = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"echovids serve exited:\n{self.log_path.read_text()[-4000:]}")
            try:
                ready = httpx.get(f"{self.url}/readyz", timeout=3).status_code == 200
                if ready and self.ready_s is None:
                    self.ready_s = time.monotonic() - started
                if ready and self._answers_a_search():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"stack not ready in {timeout} s:\n{self.log_path.read_text()[-4000:]}")

    def _answers_a_search(self) -> bool:
        """/readyz sees every shard warm, but an embedder loads its model on its first task (TensorFlow and LiteRT
        are not fork-safe): one search through the whole path first, so a test's first timed search does not
        pay for the load. Started means one search came back."""
        probe = wav_bytes(np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32) * np.float32(0.1))
        try:
            with httpx.Client(base_url=self.url, timeout=40) as client:
                job = search_and_wait(client, probe, "warm-up.wav", timeout_s=35)
        except RuntimeError:  # refused (503 while Redis comes up): not started yet
            return False
        return job.get("status") == "done"

    def stop(self, timeout: float = 60.0) -> None:
        """SIGINT (the supervisor stops its children in order), then kill after ``timeout``."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def cli(self, *args: str, timeout: float | None = 300) -> subprocess.CompletedProcess[str]:
        """Run `echovids ARGS...` against this stack (same settings), capturing its output."""
        return subprocess.run(
            [sys.executable, "-m", "echovids.cli", *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def search(self, path: Path, k: int = 5, timeout: float = 60.0) -> dict[str, Any]:
        """POST a query file and long-poll until its job ends; returns the job record."""
        with httpx.Client(base_url=self.url, timeout=30) as client:
            job = search_and_wait(client, path.read_bytes(), path.name, k, timeout)
        if job["status"] not in SETTLED:
            raise AssertionError(f"search still {job['status']} after {timeout} s")
        return job


def make_stack(data_dir: Path, redis_url: str | None, *, keep_settings: bool = False, **extra_env: str) -> Stack:
    """A stack (not started) on a free port. Its settings are ``extra_env`` over the defaults; with
    ``keep_settings`` the caller's ECHOVIDS_* tuning passes through too (where the deployment lives never does)."""
    own = {"ECHOVIDS_DATA_DIR", "ECHOVIDS_PORT", "ECHOVIDS_REDIS_URL", "ECHOVIDS_DATABASE_URL"}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ECHOVIDS_") or (keep_settings and k not in own) or k == "ECHOVIDS_MODEL_DIR"
    }
    port = free_port()
    env.update(
        ECHOVIDS_DATA_DIR=str(data_dir),
        ECHOVIDS_PORT=str(port),
        PYTHONUNBUFFERED="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        **extra_env,
    )
    if redis_url:
        env["ECHOVIDS_REDIS_URL"] = redis_url
    return Stack(data_dir=data_dir, port=port, env=env, extra_env=dict(extra_env))
