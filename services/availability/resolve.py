"""Per query: mark each result available or not, drop dead videos and back-fill to k, within a time budget."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from echovids.schemas import SearchResult
from echovids.settings import Settings
from services.availability import cache, stats
from services.availability.checker import Checker, open_checker, process_checker
from services.availability.status import VideoStatus

# About one AudioSet video in six is gone: checking a quarter more candidates up front usually saves the
# second round trip that back-filling the dead would otherwise need.
SPARE = 0.25


@dataclass
class Resolved:
    results: list[SearchResult]
    deferred: list[str]  # shown with available=null: the budget ran out before YouTube answered


def _to_check(results: list[SearchResult], known: dict[str, VideoStatus], k: int, tried: set[str]) -> list[str]:
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


async def resolve(results: list[SearchResult], k: int, checker: Checker, budget_s: float) -> Resolved:
    """The first k results that are not known dead, each with `available` set."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    ids = list(dict.fromkeys(r.source.youtube_id for r in results if r.source.youtube_id))
    known = await cache.read(checker.redis, ids)
    cached = set(known)
    tried: set[str] = set()
    # Rounds: dead videos found in one round pull later candidates into the top k, which need a check too.
    while loop.time() < deadline:
        batch = _to_check(results, known, k, tried)
        if not batch:
            break
        tried.update(batch)
        known.update(await checker.check(batch, deadline=deadline))

    resolved, considered = select(results, known, k)
    checker.counters.cache_hits += len(considered & cached)
    checker.counters.cache_misses += len(considered - cached)
    checker.counters.deferred += len(resolved.deferred)
    return resolved


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


def resolve_cached(results: list[SearchResult], k: int) -> Resolved | None:
    """The answer when the cache alone settles it (no video left to look up), else None: one Redis read.

    The search merge calls this before handing a query to the availability worker, so that a query whose
    videos are all cached (the common case) finishes without another task.
    """
    ids = list(dict.fromkeys(r.source.youtube_id for r in results if r.source.youtube_id))
    known = cache.read_sync(ids)
    if _to_check(results, known, k, set()):
        return None
    resolved, considered = select(results, known, k)
    stats.add_sync(cache_hits=len(considered))
    return resolved


async def resolve_query(results: list[SearchResult], k: int, settings: Settings) -> Resolved:
    """resolve() with this process's long-lived checker and the query budget."""
    checker = await process_checker(settings)
    try:
        return await resolve(results, k, checker, budget_s=settings.availability_budget_ms / 1000)
    finally:
        await checker.counters.flush(checker.redis)


async def check_in_background(video_ids: list[str], settings: Settings) -> dict[str, VideoStatus]:
    """Check videos a query had to leave unknown, with the longer background budget."""
    async with open_checker(settings) as checker:
        deadline = asyncio.get_running_loop().time() + settings.availability_background_budget_s
        return await checker.check(video_ids, deadline=deadline)
