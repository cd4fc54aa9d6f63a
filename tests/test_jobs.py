"""Job records in a real Redis: the long poll's wait for a job to settle."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from echovids.errors import NotFound
from echovids.jobs import JobStore
from echovids.schemas import JobStatus


def test_wait_settled_returns_when_the_job_is_done(env: Path) -> None:
    store = JobStore()
    job = store.create(k=3)
    finisher = threading.Timer(0.3, lambda: store.finish(job.id, []))
    started = time.monotonic()
    finisher.start()
    settled = asyncio.run(store.wait_settled(job.id, 10))
    elapsed = time.monotonic() - started
    assert settled.status == JobStatus.done
    assert 0.25 <= elapsed < 5  # woken by the announcement, not by the 10 s wait running out


def test_wait_settled_gives_the_job_as_it_stands_when_the_wait_runs_out(env: Path) -> None:
    store = JobStore()
    job = store.create(k=3)
    store.set_status(job.id, JobStatus.searching)
    started = time.monotonic()
    assert asyncio.run(store.wait_settled(job.id, 0.4)).status == JobStatus.searching
    assert time.monotonic() - started >= 0.35
    failed = store.create(k=3)
    store.update(failed.id, status=JobStatus.failed)
    assert asyncio.run(store.wait_settled(failed.id, 10)).status == JobStatus.failed  # already settled: at once
    with pytest.raises(NotFound):
        asyncio.run(store.wait_settled("no-such-job", 1))
