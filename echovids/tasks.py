"""What every Celery task of Echovids shares: job bookkeeping on failure, retries for transient faults."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import redis
from celery import Task, current_task
from celery.exceptions import Ignore

from echovids import catalog
from echovids.errors import EchovidsError, PayloadTooLarge, ProcessingFailed
from echovids.jobs import JobStore
from echovids.queues import TaskName
from echovids.settings import get_settings

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

# The task that starts a library clip's processing: each delivery counts as an attempt in the catalog, so a clip
# that kills its worker (redelivered, acks_late) fails after a few tries instead of killing workers for ever.
_CLIP_ATTEMPT_TASKS = frozenset({TaskName.EMBED_CLIP})
# The tasks of a library clip's ingest chain: each ends at once when the clip is settled already.
_CLIP_TASKS = frozenset({TaskName.EMBED_CLIP, TaskName.INDEX_CLIP})


class JobTask(Task):  # type: ignore[misc]
    """Marks the task's job failed when the task dies of something unexpected (a bug, a time limit), and keeps a
    MemoryError from reaching Celery, which takes it for the end of the worker and stops the whole process."""

    abstract = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        clip_id = kwargs.get("clip_id")
        if clip_id and self.name in _CLIP_TASKS and catalog.is_settled(clip_id):
            # A message delivered again after its chain finished (a worker stopped before its ack reached the
            # broker): the clip is indexed and its upload gone, so running it again could only fail it.
            log.info("%s for clip %s, which is settled already: nothing to do", self.name, clip_id)
            raise Ignore()
        if clip_id and self.name in _CLIP_ATTEMPT_TASKS:
            attempts = catalog.start_attempt(clip_id)
            limit = get_settings().library_max_attempts
            if attempts is not None and attempts > limit:
                fail_job(
                    kwargs.get("job_id"),
                    ProcessingFailed(f"Processing the clip was started {limit} times and never finished."),
                )
        try:
            return super().__call__(*args, **kwargs)
        except MemoryError:
            log.error("%s ran out of memory (job %s); the job fails, the worker lives", self.name, kwargs.get("job_id"))
            fail_job(
                kwargs.get("job_id"), PayloadTooLarge("The audio needs more memory to process than this service has.")
            )

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        job_id = kwargs.get("job_id")
        error = EchovidsError(f"Internal error in {self.name}: {type(exc).__name__}: {exc}")
        if job_id:
            with contextlib.suppress(EchovidsError):
                JobStore().fail(job_id, error)
        if kwargs.get("clip_id"):
            with contextlib.suppress(Exception):  # the job is failed already; the catalog is best effort here
                catalog.mark_failed(kwargs["clip_id"], error.code, error.message)


TASK_OPTIONS["base"] = JobTask


def fail_job(job_id: str | None, error: EchovidsError) -> None:
    """End a job on a domain error and stop the chain, without a traceback in the worker's log.

    A library clip's task (a ``clip_id`` argument) records the failure in the catalog too: durably, where the
    listing (``?status=failed``) and the upkeep read it.
    """
    log.info("job %s failed: %s (%s)", job_id, error.code, error.message)
    if job_id:
        JobStore().fail(job_id, error)
    request = getattr(current_task, "request", None)
    clip_id = (getattr(request, "kwargs", None) or {}).get("clip_id")
    if clip_id:
        catalog.mark_failed(clip_id, error.code, error.message)
    raise Ignore()
