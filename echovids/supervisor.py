"""`echovids serve`: every service of a single-machine deployment, each its own process, under supervisord.

supervisord (a real process manager) restarts a process that exits, with a growing wait between quick
failures, instead of one crash stopping everything; the embedded Redis is one of its programs, restarted on
the same port with the same password. Ctrl-C (or SIGTERM) stops every program, Redis last.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from echovids.queues import SERVICES
from echovids.redis_conn import embedded_port, prepare_embedded, running_embedded_url
from echovids.settings import Settings


def service_commands(settings: Settings) -> dict[str, list[str]]:
    python = sys.executable
    commands = {svc: [python, "-m", "echovids.cli", "worker", svc] for svc in SERVICES}
    commands["search"] += ["--concurrency", str(settings.search_processes)]
    if settings.search_pinned:
        search = commands.pop("search")
        for shard in range(settings.search_shards):
            commands[f"search-{shard}"] = [*search, "--shard", str(shard), "--merge" if shard == 0 else "--no-merge"]
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
        # Idle keep-alive connections are closed; a body's own deadline is the gateway's (ECHOVIDS_BODY_TIMEOUT_S).
        "--timeout-keep-alive",
        str(settings.keep_alive_s),
    ]
    return commands


def _program(name: str, command: list[str], priority: int) -> str:
    # startsecs/startretries: a process that dies within 5 s of starting is retried after 1, 2, 3 ... s (up to
    # 100 tries); one that ran longer is restarted at once (autorestart), every time. A Celery worker's children
    # share its process group: stopped and killed with it.
    return f"""
[program:{name}]
command={" ".join(shlex.quote(part) for part in command)}
priority={priority}
autostart=true
autorestart=true
startsecs=5
startretries=100
stopsignal=TERM
stopwaitsecs=20
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=/dev/stdout
stdout_logfile_maxbytes=0
"""


def supervisord_config(settings: Settings, redis_command: list[str] | None) -> str:
    data = settings.data_dir.resolve()
    text = f"""[supervisord]
nodaemon=true
logfile={data / "supervisord.log"}
pidfile={data / "supervisord.pid"}
childlogdir={data}
loglevel=warn
"""
    if redis_command is not None:
        text += _program("redis", redis_command, priority=1)  # started first, stopped last
    for name, command in service_commands(settings).items():
        text += _program(name, command, priority=10)
    return text


def serve(settings: Settings, log: bool = True) -> int:
    """Write supervisord's config into the data dir and become supervisord (Redis, the workers, the gateway)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    redis_command = None
    if not settings.redis_url:
        if running_embedded_url(settings):
            raise SystemExit(f"an embedded Redis is already running for {settings.data_dir}: is Echovids serving?")
        url, redis_command = prepare_embedded(settings)
        os.environ["ECHOVIDS_REDIS_URL"] = url  # every program inherits supervisord's environment
        if log:
            print(f"embedded Redis on port {embedded_port(url)} (data in {settings.data_dir / 'redis'})", flush=True)
    config = Path(settings.data_dir / "supervisord.conf")
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it may hold the Redis password
    with os.fdopen(fd, "w") as f:
        f.write(supervisord_config(settings, redis_command))
    if log:
        print(f"Echovids on http://{settings.host}:{settings.port} (Ctrl-C stops)", flush=True)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(config)])
    return 0  # not reached: execv replaces this process
