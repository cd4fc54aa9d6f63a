"""The search deadline: a query whose shards have not all answered in time is merged with those that did.

No task per query waits for the deadline. Submitting a search adds its job to a sorted set of deadlines
(``echovids.jobs.DEADLINES``) and the merge takes it off; each search worker that runs the merge sweeps the set
twice a second and sends a merge task only for a query whose wait is over (a shard down or too slow), which then
answers partially (or fails it as `search_unavailable` when no shard answered at all).
``ECHOVIDS_SEARCH_TIMEOUT_S`` counts from the end of the query's embedding; a query not embedded within
``ECHOVIDS_SEARCH_TOTAL_TIMEOUT_S`` of its submission is failed here. Should the merge worker itself hang, the
gateway ends an overdue job when it is read (``echovids.jobs.settle_by``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from echovids import queues
from echovids.celery_app import get_celery
from echovids.errors import NotFound
from echovids.jobs import PAST_SEARCH, JobStore, overdue_error
from echovids.queues import TaskName
from echovids.schemas import JobStatus
from echovids.settings import get_settings

log = logging.getLogger(__name__)

# How often the set is read: a deadline is kept to within this; one cheap read per tick and worker.
SWEEP_S = 0.5


def sweep(store: JobStore, wait_s: float, now: float | None = None) -> list[tuple[str, int]]:
    """Claim the queries whose shard wait of ``wait_s`` is over: (job id, k) for each, each for one sweeper.

    An entry is first due ``wait_s`` after submission; a query still embedding by then (or queued) has not
    begun its wait, so its entry moves to the end of the wait counted from its embedding's end.
    """
    now = time.time() if now is None else now
    claimed = []
    for job_id in store.overdue(now):
        try:
            job = store.get(job_id)
        except NotFound:
            store.claim_deadline(job_id)  # expired: nobody waits for it any more
            continue
        if job.status in PAST_SEARCH:
            store.claim_deadline(job_id)
            continue
        if (error := overdue_error(job, now)) is not None and job.status != JobStatus.searching:
            # Never embedded within the whole deadline (an embedder hung or gone): ended, not rescheduled.
            if store.claim_deadline(job_id):
                store.fail(job_id, error)
            continue
        searching_ms = job.stage_ms.get(JobStatus.searching.value)
        due = now + wait_s if searching_ms is None else job.created_at.timestamp() + searching_ms / 1000 + wait_s
        if due > now:
            store.set_deadline(job_id, due)
        elif store.claim_deadline(job_id):
            claimed.append((job_id, job.k or 0))
    return claimed


def send_merges(store: JobStore, wait_s: float) -> int:
    """One sweep, and a merge task sent for each query claimed; returns how many."""
    claimed = sweep(store, wait_s)
    for n, (job_id, k) in enumerate(claimed):
        try:
            get_celery().send_task(TaskName.SEARCH_MERGE, kwargs={"job_id": job_id, "k": k}, queue=queues.SEARCH_MERGE)
        except Exception:
            for unsent, _ in claimed[n:]:
                store.add_deadline(unsent, 0)  # due again at the next sweep
            raise
    return len(claimed)


def _sweep_forever(stop: threading.Event) -> None:
    while not stop.wait(SWEEP_S):
        try:
            send_merges(JobStore(), get_settings().search_timeout_s)
        except Exception:  # Redis away for a moment: the next tick tries again
            log.exception("search deadline sweep failed")


_stop = threading.Event()


@worker_ready.connect
def _start_sweeping(sender: Any = None, **_: Any) -> None:
    """In a worker that runs the merge (its main process), sweep the deadlines beside taking tasks."""
    if sender is None or queues.SEARCH_MERGE not in sender.app.amqp.queues.consume_from:
        return
    _stop.clear()
    threading.Thread(target=_sweep_forever, args=(_stop,), name="search-deadlines", daemon=True).start()


@worker_shutdown.connect
def _stop_sweeping(**_: Any) -> None:
    _stop.set()
