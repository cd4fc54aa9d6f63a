"""`echovids worker availability`: the availability service's Celery worker on its queue."""

from __future__ import annotations

from echovids import queues
from echovids.worker import start_worker
from services.availability import tasks  # noqa: F401  (registers the tasks with the Celery app)


def run(*, concurrency: int | None = None, loglevel: str = "INFO", **_: object) -> None:
    """Register the availability tasks and consume the availability queue."""

    start_worker("availability", [queues.AVAILABILITY], concurrency=concurrency or 1, loglevel=loglevel)
