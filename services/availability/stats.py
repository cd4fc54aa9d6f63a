"""A check's availability counters, added to the shared totals (read by echovids.availability.snapshot)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import redis.asyncio as aioredis

from echovids.availability import STATS


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
                pipe.hincrby(STATS, name, value)
            await pipe.execute()
        for name in fields:
            setattr(self, name, 0)
