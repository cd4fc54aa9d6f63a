"""Which shards a warm search process holds: each pool process says so in Redis once its shards are loaded.

A Celery worker consumes its queues before its pool processes have loaded their shards (a 1M-frame shard takes
~10 s), so a live consumer does not mean a shard can answer. Each mark expires unless its process renews it: a
process killed or hung stops counting within ``TTL_S``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

import redis

from echovids.redis_conn import get_redis

PREFIX = "echovids:search:warm:"
TTL_S = 15
log = logging.getLogger(__name__)


def mark(shards: list[int]) -> None:
    """This process holds ``shards``, loaded, for the next TTL_S seconds."""
    get_redis().set(f"{PREFIX}{socket.gethostname()}:{os.getpid()}", ",".join(map(str, shards)), ex=TTL_S)


def keep_marked(shards: list[int], stop: threading.Event | None = None) -> threading.Event:
    """Mark now, then renew the mark from a daemon thread for as long as the process lives (or until the event
    returned is set)."""
    stop = stop or threading.Event()

    def renew() -> None:
        while True:
            try:
                mark(shards)
            except redis.RedisError as exc:  # Redis restarting: the next turn marks again
                log.warning("could not mark shards %s warm: %s", shards, exc)
            if stop.wait(TTL_S / 3):
                return

    threading.Thread(target=renew, name="warm-shards", daemon=True).start()
    return stop


def warm() -> set[int]:
    """The shards some live search process has loaded."""
    client = get_redis()
    held: set[int] = set()
    for key in client.scan_iter(match=f"{PREFIX}*", count=1000):
        value = client.get(key)  # bytes (no decode_responses); None if it expired since the scan
        if isinstance(value, bytes):
            held.update(int(s) for s in value.decode().split(",") if s)
    return held
