"""Availability counters in Redis (shared by every worker) and the snapshot GET /v1/availability/stats serves."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import redis
import redis.asyncio as aioredis
from pydantic import BaseModel, Field

from echovids.redis_conn import get_redis
from services.availability import cache

KEY = "echovids:availability:stats"


@dataclass
class Counters:
    """One check's counts, added to the shared totals in a single round trip."""

    cache_hits: int = 0
    cache_misses: int = 0
    youtube_calls: int = 0
    youtube_errors: int = 0
    deferred: int = 0
    refreshed: int = 0

    async def flush(self, client: aioredis.Redis) -> None:
        """Add to the totals and start again from zero."""
        fields = {name: value for name, value in asdict(self).items() if value}
        if fields:
            pipe = client.pipeline(transaction=False)
            for name, value in fields.items():
                pipe.hincrby(KEY, name, value)
            await pipe.execute()
        for name in fields:
            setattr(self, name, 0)


def add_sync(client: redis.Redis | None = None, **counts: int) -> None:
    """Add to the totals from synchronous code (the search merge's cache-only answers)."""
    counts = {name: value for name, value in counts.items() if value}
    if counts:
        pipe = (client or get_redis()).pipeline(transaction=False)
        for name, value in counts.items():
            pipe.hincrby(KEY, name, value)
        pipe.execute()


class AvailabilityStats(BaseModel):
    statuses: dict[str, int] = Field(description="Cached videos by status")
    cache_hits: int = Field(description="Result videos whose status came from the cache")
    cache_misses: int = Field(description="Result videos that needed a look at YouTube")
    cache_hit_rate: float | None = Field(description="hits / (hits + misses); null before any lookup")
    youtube_calls: int = Field(description="HTTP calls to YouTube, retries included")
    youtube_errors: int = Field(description="Calls that failed: 429, 5xx, timeouts, connection errors")
    deferred: int = Field(description="Videos left to a background check when a query's budget ran out")
    refreshed: int = Field(description="Catalog videos re-checked by the periodic refresh")


def snapshot(client: redis.Redis | None = None) -> AvailabilityStats:
    """The totals now."""
    client = client or get_redis()
    raw = {cache.text(k): int(v) for k, v in client.hgetall(KEY).items()}
    hits, misses = raw.get("cache_hits", 0), raw.get("cache_misses", 0)
    return AvailabilityStats(
        statuses=cache.counts(client),
        cache_hits=hits,
        cache_misses=misses,
        cache_hit_rate=round(hits / (hits + misses), 4) if hits + misses else None,
        youtube_calls=raw.get("youtube_calls", 0),
        youtube_errors=raw.get("youtube_errors", 0),
        deferred=raw.get("deferred", 0),
        refreshed=raw.get("refreshed", 0),
    )
