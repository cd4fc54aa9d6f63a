"""Availability tasks: per query (drop dead videos, finish the job), background checks, the periodic refresh."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from celery import Task, shared_task

from echovids import queues
from echovids.availability import BOOKKEEPING, VideoStatus
from echovids.celery_app import get_celery
from echovids.jobs import JobStore
from echovids.queues import TaskName
from echovids.redis_conn import get_redis
from echovids.schemas import SearchResult
from echovids.settings import Settings, get_settings
from echovids.tasks import TASK_OPTIONS
from services.availability.refresh import refresh
from services.availability.resolve import check_in_background, resolve_query

T = TypeVar("T")

PENDING = f"{BOOKKEEPING}pending:"

_loop: asyncio.AbstractEventLoop | None = None


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on this process's one event loop, which keeps the availability checker's connections open."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(coro)


@shared_task(name=TaskName.CHECK_AVAILABILITY, **TASK_OPTIONS)
def check_results(
    self: Task, results: list[dict[str, Any]], *, job_id: str, k: int, cached: dict[str, str] | None = None
) -> None:
    """Finish the job with k results, dead videos dropped; what the budget left unknown is checked later.

    ``cached``: the statuses the search merge read from the cache for these results (not read again here).
    """
    settings = get_settings()
    parsed = [SearchResult.model_validate(r) for r in results]
    known = None if cached is None else {vid: VideoStatus(status) for vid, status in cached.items()}
    resolved = run(resolve_query(parsed, k, settings, cached=known))
    JobStore().finish(job_id, resolved.results)
    if resolved.deferred:
        defer(resolved.deferred, settings)


def defer(video_ids: list[str], settings: Settings) -> None:
    """Queue one background check for the videos no other query has queued already."""
    pipe = get_redis().pipeline(transaction=False)
    for vid in video_ids:
        pipe.set(PENDING + vid, 1, nx=True, ex=int(settings.availability_background_budget_s) + 60)
    fresh = [vid for vid, queued in zip(video_ids, pipe.execute(), strict=True) if queued]
    if fresh:
        get_celery().send_task(TaskName.CHECK_VIDEOS_LATER, kwargs={"video_ids": fresh}, queue=queues.AVAILABILITY)


@shared_task(name=TaskName.CHECK_VIDEOS_LATER, **TASK_OPTIONS)
def check_later(self: Task, *, video_ids: list[str]) -> dict[str, str]:
    """Check videos a query's budget left unknown and cache their statuses."""
    try:
        statuses = asyncio.run(check_in_background(video_ids, get_settings()))
    finally:
        get_redis().delete(*(PENDING + vid for vid in video_ids))
    return {vid: status.value for vid, status in statuses.items()}


@shared_task(name=TaskName.REFRESH_AVAILABILITY, **TASK_OPTIONS)
def refresh_catalog(self: Task) -> int:
    """Celery beat's periodic run: re-check the least recently checked catalog videos."""
    return len(asyncio.run(refresh(get_settings())))
