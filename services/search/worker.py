"""`echovids worker search`: the search service's Celery worker on its shard queues (and the merge queue)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import time
from functools import partial
from typing import Any

from celery.signals import celeryd_after_setup, worker_process_init, worker_ready

from echovids import queues, warm_shards
from echovids.celery_app import get_celery
from echovids.retry import with_backoff
from echovids.settings import get_settings
from echovids.worker import start_worker
from services.search import tasks  # registers the search tasks with the Celery app

# The shards this worker serves: each pool process holds them before it takes a task.
PRELOAD_SHARDS: list[int] = []
# `echovids bench scale` reads this line to time a start: keep its words.
LOADED = "search process %d: shards %s loaded in %.1f s"
log = logging.getLogger(__name__)


@celeryd_after_setup.connect
def _load_for_the_pool(**_: Any) -> None:
    """Load the served shards in the worker's main process, once its logging is set up and before its pool
    forks. The pool processes inherit them copy-on-write: a shard's arrays (ScaNN's codes and tree, the row tables)
    are in memory once for the whole pool instead of once a process (docs/benchmarks.md, "One copy of a shard for
    the pool"). ``gc.freeze`` keeps the collector from writing to the inherited objects, which would copy their
    pages into each process."""
    started = time.monotonic()
    _load_shards("search worker")
    gc.freeze()
    log.info("search worker: shards %s loaded in %.1f s for its pool", PRELOAD_SHARDS, time.monotonic() - started)


@worker_ready.connect
def _forget_shards(**_: Any) -> None:
    """The pool holds the shards now: the main process lets its copy go (the pool's pages stay theirs), so it
    never keeps a snapshot the pool has moved on from. A pool process started later loads its own."""
    tasks.forget_indexes()
    gc.unfreeze()
    gc.collect()
    _release_free_heap()


@worker_process_init.connect
def _preload(**_: Any) -> None:
    """Have the served shards when a pool process starts, so no query waits for a cold index: inherited from the
    main process, brought up to date (a view sorts the postings of the clips outside the snapshot: all of them, on
    a library whose snapshot predates its postings, tens of seconds at 1M frames), or loaded here by a process
    started after the main process let them go."""
    started = time.monotonic()
    _load_shards(f"search process {os.getpid()}")
    _release_free_heap()
    log.info(LOADED, os.getpid(), PRELOAD_SHARDS, time.monotonic() - started)
    warm_shards.keep_marked(list(PRELOAD_SHARDS))  # /readyz counts this process from now on


def _load_shards(who: str) -> None:
    for shard in PRELOAD_SHARDS:  # their folders first, while Redis may still be starting
        tasks.open_index(shard)
    for shard in PRELOAD_SHARDS:
        # A process restarted while Redis is down waits for it: a preload given up on would leave the process
        # unmarked, and /readyz 503, for as long as it lives.
        with_backoff(partial(_load, shard), who, say=log.warning)


def _release_free_heap() -> None:
    """Give the system back the heap a load freed: glibc keeps freed memory for reuse, and a load's temporaries
    (the layout's, ScaNN's reading) left ~15 MB of it in each process at 1M frames (docs/benchmarks.md)."""
    with contextlib.suppress(OSError, AttributeError):  # a C library without it (not glibc)
        ctypes.CDLL(None).malloc_trim(0)


def _load(shard: int) -> None:
    tasks.get_index(shard).view()


def run(
    *,
    shards: list[int] | None = None,
    merge: bool = True,
    concurrency: int | None = None,
    loglevel: str = "INFO",
    **_: object,
) -> None:
    """Register the search tasks and consume the queues of ``shards`` (default all), plus the merge's if ``merge``."""
    served = shards or list(range(get_settings().search_shards))
    PRELOAD_SHARDS[:] = served
    # A pool process loads its shards before it takes tasks; a large shard needs more than Celery's 4 s.
    get_celery().conf.worker_proc_alive_timeout = 600
    names = [queues.shard_queue(i) for i in served] + ([queues.SEARCH_MERGE] if merge else [])
    # Workers pinned to shards on one host need names of their own (Celery's node names must differ).
    node = "search" if shards is None else "search.shard" + "-".join(map(str, served))
    start_worker(node, names, concurrency=concurrency or 1, loglevel=loglevel)
