"""The availability cache's read side, shared by the search merge, the availability worker and the gateway.

One Redis key per YouTube video holds its last known status (written by services/availability, which alone
talks to YouTube). Read here: statuses, the answer a query gets when the cache alone settles it, and the stats.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import StrEnum

import redis
import redis.asyncio as aioredis
from pydantic import BaseModel, Field

from echovids.redis_conn import get_redis
from echovids.schemas import SearchResult

# Beside the per-video keys: per status, a sorted set of video ids scored by expiry (counts for the stats
# without scanning keys), and one sorted set of every video scored by when it was last checked (refresh order).
BOOKKEEPING = "echovids:availability:"
CHECKED = f"{BOOKKEEPING}checked"
STATS = f"{BOOKKEEPING}stats"
# About one AudioSet video in six is gone: checking a quarter more candidates up front usually saves the
# second round trip that back-filling the dead would otherwise need.
SPARE = 0.25


class VideoStatus(StrEnum):
    available = "available"
    # oEmbed 401/403: the video exists but its owner disabled embedding; the watch link still plays.
    unembeddable = "unembeddable"
    gone = "gone"
    unknown = "unknown"

    @property
    def available_flag(self) -> bool | None:
        """The result's `available`: linkable videos true, dead false, unknown null."""
        if self is VideoStatus.gone:
            return False
        if self is VideoStatus.unknown:
            return None
        return True


def text(value: object) -> str:
    """A Redis reply as text (clients may be set to decode or not)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def video_key(video_id: str) -> str:
    return f"echovids:yt:{video_id}"


def status_index(status: VideoStatus) -> str:
    return f"{BOOKKEEPING}status:{status.value}"


# -- statuses ----------------------------------------------------------------------------------------------------
def video_ids(results: list[SearchResult]) -> list[str]:
    """The results' YouTube videos, each once, in result order."""
    return list(dict.fromkeys(r.source.youtube_id for r in results if r.source.youtube_id))


async def read(client: aioredis.Redis, video_ids: list[str]) -> dict[str, VideoStatus]:
    """The cached statuses of those videos that have one."""
    if not video_ids:
        return {}
    return _statuses(video_ids, await client.mget([video_key(v) for v in video_ids]))


def read_sync(video_ids: list[str], client: redis.Redis | None = None) -> dict[str, VideoStatus]:
    """:func:`read` for synchronous callers (the search merge)."""
    if not video_ids:
        return {}
    return _statuses(video_ids, (client or get_redis()).mget([video_key(v) for v in video_ids]))


def _statuses(video_ids: list[str], raw: list) -> dict[str, VideoStatus]:
    return {v: VideoStatus(text(r)) for v, r in zip(video_ids, raw, strict=True) if r is not None}


# -- a query's answer from what is known ---------------------------------------------------------------------------
@dataclass
class Resolved:
    results: list[SearchResult]
    deferred: list[str]  # shown with available=null: the budget ran out before YouTube answered


def to_check(results: list[SearchResult], known: dict[str, VideoStatus], k: int, tried: set[str]) -> list[str]:
    """Unchecked video ids among the first k results not known dead, then a few spares behind them."""
    head: list[str] = []
    spares: list[str] = []
    seen: set[str] = set()
    kept = 0
    for result in results:
        vid = result.source.youtube_id
        if vid is not None and known.get(vid) is VideoStatus.gone:
            continue
        fresh = vid is not None and vid not in known and vid not in tried and vid not in seen
        if kept < k:
            kept += 1
            target = head
        elif len(spares) < math.ceil(len(head) * SPARE):
            target = spares
        else:
            break
        if fresh and vid is not None:
            target.append(vid)
            seen.add(vid)
    return head + spares


def select(results: list[SearchResult], known: dict[str, VideoStatus], k: int) -> tuple[Resolved, set[str]]:
    """The first k results not known dead, each with `available` set; and the video ids looked at."""
    final: list[SearchResult] = []
    considered: set[str] = set()
    for result in results:
        if len(final) == k:
            break
        vid = result.source.youtube_id
        if vid is None:
            if result.source.kind == "file":
                result.available = True  # the library's own audio never goes away
            final.append(result)
            continue
        considered.add(vid)
        status = known.get(vid)
        if status is VideoStatus.gone:
            continue
        result.available = status.available_flag if status is not None else None
        final.append(result)
    deferred = list(
        dict.fromkeys(r.source.youtube_id for r in final if r.source.youtube_id and r.source.youtube_id not in known)
    )
    return Resolved(results=final, deferred=deferred), considered


def resolve_cached(results: list[SearchResult], k: int, known: dict[str, VideoStatus]) -> Resolved | None:
    """The answer when the cached statuses ``known`` alone settle it (no video left to look up), else None.

    The search merge reads the statuses and calls this before handing a query to the availability worker
    (with the statuses it read, so the cache is read once), so that a query whose videos are all cached (the
    common case) finishes without another task.
    """
    if to_check(results, known, k, set()):
        return None
    resolved, considered = select(results, known, k)
    add_counts(cache_hits=len(considered))
    return resolved


# -- stats -------------------------------------------------------------------------------------------------------
def add_counts(client: redis.Redis | None = None, **counts: int) -> None:
    """Add to the shared totals from synchronous code (the search merge's cache-only answers)."""
    counts = {name: value for name, value in counts.items() if value}
    if counts:
        pipe = (client or get_redis()).pipeline(transaction=False)
        for name, value in counts.items():
            pipe.hincrby(STATS, name, value)
        pipe.execute()


def counts(client: redis.Redis | None = None) -> dict[str, int]:
    """Cached videos by status (entries past their TTL are pruned first)."""
    client = client or get_redis()
    pipe = client.pipeline(transaction=False)
    for status in VideoStatus:
        pipe.zremrangebyscore(status_index(status), "-inf", time.time())
        pipe.zcard(status_index(status))
    answers = pipe.execute()
    return {status.value: int(answers[2 * i + 1]) for i, status in enumerate(VideoStatus)}


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
    """The totals now (GET /v1/availability/stats)."""
    client = client or get_redis()
    raw = {text(k): int(v) for k, v in client.hgetall(STATS).items()}
    hits, misses = raw.get("cache_hits", 0), raw.get("cache_misses", 0)
    return AvailabilityStats(
        statuses=counts(client),
        cache_hits=hits,
        cache_misses=misses,
        cache_hit_rate=round(hits / (hits + misses), 4) if hits + misses else None,
        youtube_calls=raw.get("youtube_calls", 0),
        youtube_errors=raw.get("youtube_errors", 0),
        deferred=raw.get("deferred", 0),
        refreshed=raw.get("refreshed", 0),
    )
