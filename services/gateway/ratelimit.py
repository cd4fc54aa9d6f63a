"""Per-client request rates: a token bucket per client and kind in Redis, so every gateway process shares it."""

from __future__ import annotations

import math

import redis

# Takes one token if there is one and answers 0, or answers the milliseconds until the next token without
# taking anything (a refused request costs the client nothing more). Redis's own clock keeps every gateway
# host in step.
_TAKE = """
local rate = tonumber(ARGV[1]) / 1000
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
if tokens < 1 then return math.ceil((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
return 0
"""


def bucket_key(kind: str, client: str) -> str:
    return f"echovids:ratelimit:{kind}:{client}"


def take(client: redis.Redis, key: str, rate_per_s: float, burst: int) -> float:
    """Take one request from the bucket: 0 when allowed, else the seconds until the client may try again."""
    wait_ms = int(client.register_script(_TAKE)(keys=[key], args=[rate_per_s, burst]))
    return 0.0 if wait_ms <= 0 else wait_ms / 1000


def retry_after(wait_s: float) -> str:
    """Retry-After in whole seconds, never 0 (a client told 0 retries at once)."""
    return str(max(1, math.ceil(wait_s)))
