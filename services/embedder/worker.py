"""`echovids worker embedder`: the embedder's Celery worker on the embed queue."""

from __future__ import annotations

from echovids import queues
from echovids.settings import get_settings
from echovids.worker import start_worker
from services.embedder import tasks  # noqa: F401  (registers the tasks with the Celery app)


def run(*, concurrency: int | None = None, loglevel: str = "INFO", **_: object) -> None:
    """Register the embedder's tasks and consume the embed queue (threads or processes per ECHOVIDS_EMBEDDER_POOL)."""

    settings = get_settings()
    pool = settings.embedder_pool
    if pool == "threads" and concurrency is None:
        concurrency = settings.embedder_threads
    start_worker("embedder", [queues.EMBED], pool=pool, concurrency=concurrency or 1, loglevel=loglevel)
