"""Per-client request rates: a token bucket per client and kind in Redis, so every gateway process shares it."""

from __future__ import annotations

import math

import redis

from echovids.token_bucket import SCRIPT


def bucket_key(kind: str, client: str) -> str:
    return f"echovids:ratelimit:{kind}:{client}"


def take(client: redis.Redis, key: str, rate_per_s: float, burst: int) -> float:
    """Take one request from the bucket: 0 when allowed, else the seconds until the client may try again."""
    # No reservation (a wait of 0 accepted): a request is served now or refused with the time to its token.
    wait_ms = int(client.register_script(SCRIPT)(keys=[key], args=[rate_per_s, burst, 0]))
    return 0.0 if wait_ms >= 0 else -wait_ms / 1000


def retry_after(wait_s: float) -> str:
    """Retry-After in whole seconds, never 0 (a client told 0 retries at once)."""
    return str(max(1, math.ceil(wait_s)))
