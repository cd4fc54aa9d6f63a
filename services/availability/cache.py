"""The availability cache: one Redis key per YouTube video, holding its last known status."""

from __future__ import annotations

import redis

from echovids.redis_conn import get_redis


def _key(video_id: str) -> str:
    return f"echovids:yt:{video_id}"


def cached_status(video_ids: list[str], client: redis.Redis | None = None) -> dict[str, bool | None]:
    """True = available, False = gone, None = unknown (not cached)."""
    if not video_ids:
        return {}
    client = client or get_redis()
    raw = client.mget([_key(v) for v in video_ids])
    decode = {b"available": True, b"gone": False}
    return {v: decode.get(r) if r is not None else None for v, r in zip(video_ids, raw)}
