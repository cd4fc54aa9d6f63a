"""The availability cache: one Redis key per YouTube video, holding its last known status."""

from __future__ import annotations

import time
from collections.abc import Mapping

import redis
import redis.asyncio as aioredis

from echovids.redis_conn import get_redis
from echovids.settings import Settings
from services.availability.status import VideoStatus, ttl_s

# Beside the per-video keys: per status, a sorted set of video ids scored by expiry (counts for the stats
# without scanning keys), and one sorted set of every video scored by when it was last checked (refresh order).
BOOKKEEPING = "echovids:availability:"
CHECKED = f"{BOOKKEEPING}checked"


def text(value: object) -> str:
    """A Redis reply as text (clients may be set to decode or not)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _key(video_id: str) -> str:
    return f"echovids:yt:{video_id}"


def _index(status: VideoStatus) -> str:
    return f"{BOOKKEEPING}status:{status.value}"


async def read(client: aioredis.Redis, video_ids: list[str]) -> dict[str, VideoStatus]:
    """The cached statuses of those videos that have one."""
    if not video_ids:
        return {}
    return _statuses(video_ids, await client.mget([_key(v) for v in video_ids]))


def read_sync(video_ids: list[str], client: redis.Redis | None = None) -> dict[str, VideoStatus]:
    """:func:`read` for synchronous callers (the search merge)."""
    if not video_ids:
        return {}
    return _statuses(video_ids, (client or get_redis()).mget([_key(v) for v in video_ids]))


def _statuses(video_ids: list[str], raw: list) -> dict[str, VideoStatus]:
    return {v: VideoStatus(text(r)) for v, r in zip(video_ids, raw, strict=True) if r is not None}


async def write(client: aioredis.Redis, statuses: Mapping[str, VideoStatus], settings: Settings) -> None:
    """Cache each status with its TTL and note when the video was checked."""
    if not statuses:
        return
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for video_id, status in statuses.items():
        ttl = ttl_s(status, settings)
        pipe.set(_key(video_id), status.value, ex=ttl)
        for other in VideoStatus:
            if other is not status:
                pipe.zrem(_index(other), video_id)
        pipe.zadd(_index(status), {video_id: now + ttl})
        pipe.zadd(CHECKED, {video_id: now})
    await pipe.execute()


def counts(client: redis.Redis | None = None) -> dict[str, int]:
    """Cached videos by status (entries past their TTL are pruned first)."""
    client = client or get_redis()
    pipe = client.pipeline(transaction=False)
    for status in VideoStatus:
        pipe.zremrangebyscore(_index(status), "-inf", time.time())
        pipe.zcard(_index(status))
    answers = pipe.execute()
    return {status.value: int(answers[2 * i + 1]) for i, status in enumerate(VideoStatus)}
