"""`echovids serve`: every service of a single-machine deployment, each its own process, stopped together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from types import FrameType

from echovids.queues import SERVICES
from echovids.redis_conn import start_embedded
from echovids.settings import Settings


def service_commands(settings: Settings) -> dict[str, list[str]]:
    python = sys.executable
    commands = {svc: [python, "-m", "echovids.cli", "worker", svc] for svc in SERVICES}
    commands["search"] += ["--concurrency", str(settings.search_processes)]
    if settings.embedder_pool == "prefork":
        commands["embedder"] += ["--concurrency", str(settings.embedder_processes)]
    commands["beat"] = [python, "-m", "echovids.cli", "beat", "--loglevel", "WARNING"]
    commands["gateway"] = [
        python,
        "-m",
        "uvicorn",
        "services.gateway.app:app",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--log-level",
        "warning",
    ]
    return commands


def serve(settings: Settings, log: bool = True) -> int:
    """Start Redis (embedded unless configured), the workers and the gateway; stop all on a signal."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    redis_proc = None
    if not settings.redis_url:
        url, redis_proc = start_embedded(settings)
        env["ECHOVIDS_REDIS_URL"] = url
        if log:
            print(f"embedded Redis at {url} (data in {settings.data_dir / 'redis'})", flush=True)
    children: dict[str, subprocess.Popen[bytes]] = {}
    for name, cmd in service_commands(settings).items():
        children[name] = subprocess.Popen(cmd, env=env)
    if log:
        print(f"Echovids on http://{settings.host}:{settings.port} (Ctrl-C stops)", flush=True)

    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    while not stopping:
        for name, proc in children.items():
            if proc.poll() is not None:
                print(f"{name} exited with code {proc.returncode}; stopping everything", file=sys.stderr)
                stopping, code = True, 1
                break
        time.sleep(0.2)

    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # Celery's warm shutdown: finish the running task
    deadline = time.monotonic() + 20
    for proc in children.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
    if redis_proc is not None:
        redis_proc.terminate()
        redis_proc.wait(timeout=10)
    return code
