"""A token bucket in Redis: one YouTube call rate shared by every worker process on every host."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from echovids.token_bucket import SCRIPT

KEY = "echovids:availability:rate"


class RateLimited(Exception):
    """No call slot within the time left."""


class SharedRateLimiter:
    """Waits for a call slot of the shared bucket (rate per second, burst tokens)."""

    def __init__(self, client: aioredis.Redis, rate_per_s: float, burst: int, key: str = KEY) -> None:
        self.client = client
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.key = key
        self._script = client.register_script(SCRIPT)

    async def acquire(self, max_wait_s: float) -> None:
        """Take a slot, sleeping until it is due; RateLimited when that would be later than max_wait_s."""
        max_wait_ms = max(0, int(max_wait_s * 1000))
        wait_ms = int(await self._script(keys=[self.key], args=[self.rate_per_s, self.burst, max_wait_ms]))
        if wait_ms < 0:
            raise RateLimited(f"no YouTube call slot within {max_wait_s:.3f} s")
        if wait_ms:
            await asyncio.sleep(wait_ms / 1000)
