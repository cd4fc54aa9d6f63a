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

# One sorted set: each process's member ("host:pid:shards") scored by when its mark runs out. Not a key a process:
# /readyz would scan the whole keyspace for them, millions of cached availability keys in an AudioSet library.
KEY = "echovids:search:warm"
TTL_S = 15
log = logging.getLogger(__name__)


def _now(client: redis.Redis) -> float:
    seconds, micros = client.time()  # Redis's clock: search processes on several hosts mark one set
    return seconds + micros / 1e6


def mark(shards: list[int]) -> None:
    """This process holds ``shards``, loaded, for the next TTL_S seconds."""
    client = get_redis()
    now = _now(client)
    pipe = client.pipeline()
    pipe.zadd(KEY, {f"{socket.gethostname()}:{os.getpid()}:{','.join(map(str, shards))}": now + TTL_S})
    pipe.zremrangebyscore(KEY, "-inf", now)  # marks of processes gone
    pipe.expire(KEY, TTL_S)  # nothing left behind once every process is gone
    pipe.execute()


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
    for member in client.zrangebyscore(KEY, _now(client), "+inf"):
        shards = (member.decode() if isinstance(member, bytes) else str(member)).rsplit(":", 1)[1]
        held.update(int(s) for s in shards.split(",") if s)
    return held
