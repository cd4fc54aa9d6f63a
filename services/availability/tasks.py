"""Availability tasks: mark each result available or not, drop dead videos, finish the job."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from echovids.jobs import JobStore
from echovids.queues import TaskName
from echovids.schemas import SearchResult
from echovids.tasks import TASK_OPTIONS
from services.availability.cache import cached_status


@shared_task(name=TaskName.CHECK_AVAILABILITY, **TASK_OPTIONS)
def check_results(self: Task, results: list[dict[str, Any]], *, job_id: str, k: int) -> None:
    parsed = [SearchResult.model_validate(r) for r in results]
    ids = [r.source.youtube_id for r in parsed if r.source.youtube_id]
    status = cached_status(ids)
    kept = []
    for result in parsed:
        if result.source.youtube_id:
            result.available = status.get(result.source.youtube_id)
            if result.available is False:
                continue  # a dead video is dropped; the next candidate takes its place
        kept.append(result)
    JobStore().finish(job_id, kept[:k])
