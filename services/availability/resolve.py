"""Per query: mark each result available or not, drop dead videos and back-fill to k, within a time budget."""

from __future__ import annotations

import asyncio

from echovids.availability import Resolved, VideoStatus, read, select, to_check, video_ids
from echovids.schemas import SearchResult
from echovids.settings import Settings
from services.availability.checker import Checker, open_checker, process_checker


async def resolve(
    results: list[SearchResult],
    k: int,
    checker: Checker,
    budget_s: float,
    cached: dict[str, VideoStatus] | None = None,
) -> Resolved:
    """The first k results that are not known dead, each with `available` set.

    ``cached``: the statuses the cache held for these results, when the caller (the search merge) read them
    already; read here otherwise.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    if cached is None:
        cached = await read(checker.redis, video_ids(results))
    known = dict(cached)
    tried: set[str] = set()
    # Rounds: dead videos found in one round pull later candidates into the top k, which need a check too.
    while loop.time() < deadline:
        batch = to_check(results, known, k, tried)
        if not batch:
            break
        tried.update(batch)
        known.update(await checker.check(batch, deadline=deadline))

    resolved, considered = select(results, known, k)
    checker.counters.cache_hits += len(considered & set(cached))
    checker.counters.cache_misses += len(considered - set(cached))
    checker.counters.deferred += len(resolved.deferred)
    return resolved


async def resolve_query(
    results: list[SearchResult], k: int, settings: Settings, cached: dict[str, VideoStatus] | None = None
) -> Resolved:
    """resolve() with this process's long-lived checker and the query budget."""
    checker = await process_checker(settings)
    try:
        return await resolve(results, k, checker, budget_s=settings.availability_budget_ms / 1000, cached=cached)
    finally:
        await checker.counters.flush(checker.redis)


async def check_in_background(video_ids: list[str], settings: Settings) -> dict[str, VideoStatus]:
    """Check videos a query had to leave unknown, with the longer background budget."""
    async with open_checker(settings) as checker:
        deadline = asyncio.get_running_loop().time() + settings.availability_background_budget_s
        return await checker.check(video_ids, deadline=deadline)
