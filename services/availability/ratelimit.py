"""A token bucket in Redis: one YouTube call rate shared by every worker process on every host."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

KEY = "echovids:availability:rate"

# Takes one token, or reserves the next one (the bucket goes negative, later callers queue behind) when the
# wait is within max_wait_ms; answers the wait in ms, or -1 without taking anything. Redis's own clock keeps
# hosts with skewed clocks in step.
_ACQUIRE = """
local rate = tonumber(ARGV[1]) / 1000
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens < 1 then wait = math.ceil((1 - tokens) / rate) end
if wait > max_wait then return -1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + wait + 1000)
return wait
"""


class RateLimited(Exception):
    """No call slot within the time left."""


class SharedRateLimiter:
    """Waits for a call slot of the shared bucket (rate per second, burst tokens)."""

    def __init__(self, client: aioredis.Redis, rate_per_s: float, burst: int, key: str = KEY) -> None:
        self.client = client
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.key = key
        self._script = client.register_script(_ACQUIRE)

    async def acquire(self, max_wait_s: float) -> None:
        """Take a slot, sleeping until it is due; RateLimited when that would be later than max_wait_s."""
        max_wait_ms = max(0, int(max_wait_s * 1000))
        wait_ms = int(await self._script(keys=[self.key], args=[self.rate_per_s, self.burst, max_wait_ms]))
        if wait_ms < 0:
            raise RateLimited(f"no YouTube call slot within {max_wait_s:.3f} s")
        if wait_ms:
            await asyncio.sleep(wait_ms / 1000)
