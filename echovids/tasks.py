"""What every Celery task of Echovids shares: job bookkeeping on failure, retries for transient faults."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import redis
from celery import Task
from celery.exceptions import Ignore

from echovids.errors import EchovidsError
from echovids.jobs import JobStore

log = logging.getLogger(__name__)

# Only faults that go away by themselves are retried; bad input never is.
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError)

TASK_OPTIONS: dict[str, Any] = {
    "base": None,  # filled below, once JobTask exists
    "bind": True,
    "acks_late": True,
    # Nobody reads a task's result: a chain hands the return value on in the next message, and a job's outcome
    # is in its job record. Stored, every shard's answer would be one more Redis write per query and shard.
    "ignore_result": True,
    "autoretry_for": TRANSIENT,
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 5,
}


class JobTask(Task):  # type: ignore[misc]
    """Marks the task's job failed when the task dies of something unexpected (a bug, a time limit)."""

    abstract = True

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        job_id = kwargs.get("job_id")
        if job_id:
            with contextlib.suppress(EchovidsError):
                JobStore().fail(job_id, EchovidsError(f"Internal error in {self.name}: {type(exc).__name__}: {exc}"))


TASK_OPTIONS["base"] = JobTask


def fail_job(job_id: str | None, error: EchovidsError) -> None:
    """End a job on a domain error and stop the chain, without a traceback in the worker's log."""
    log.info("job %s failed: %s (%s)", job_id, error.code, error.message)
    if job_id:
        JobStore().fail(job_id, error)
    raise Ignore()
