"""`echovids worker search`: the search service's Celery worker on its shard queues (and the merge queue)."""

from __future__ import annotations

from echovids import queues
from echovids.celery_app import get_celery
from echovids.settings import get_settings
from echovids.worker import start_worker

# The shards this worker serves: each pool process loads them before it takes a task (services.search.tasks).
PRELOAD_SHARDS: list[int] = []


def run(
    *,
    shards: list[int] | None = None,
    merge: bool = True,
    concurrency: int | None = None,
    loglevel: str = "INFO",
    **_: object,
) -> None:
    """Register the search tasks and consume the queues of ``shards`` (default all), plus the merge's if ``merge``."""
    import services.search.tasks  # noqa: F401  (registers the tasks with the Celery app)

    served = shards or list(range(get_settings().search_shards))
    PRELOAD_SHARDS[:] = served
    # A pool process loads its shards before it takes tasks; a large shard needs more than Celery's 4 s.
    get_celery().conf.worker_proc_alive_timeout = 600
    names = [queues.shard_queue(i) for i in served] + ([queues.SEARCH_MERGE] if merge else [])
    start_worker("search", names, concurrency=concurrency or 1, loglevel=loglevel)
