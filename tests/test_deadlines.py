"""Deadlines hold whatever the workers do: with every search process (the merge worker and its sweep included)
or every embedder frozen (SIGSTOP), a search answers on time with a coded failure, not "done, 0 results"."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from echovids.harness import Stack, wav_bytes
from tests.conftest import external_redis, stack_on_own_redis

REDIS_URL = external_redis(6)  # this module's own database (see conftest)
TIMEOUT_S = 2.0
TOTAL_S = 8.0


@pytest.fixture(scope="module")
def deadline_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from stack_on_own_redis(
        tmp_path_factory.mktemp("deadlines") / "data",
        REDIS_URL,
        ECHOVIDS_SEARCH_TIMEOUT_S=str(TIMEOUT_S),
        ECHOVIDS_SEARCH_TOTAL_TIMEOUT_S=str(TOTAL_S),
        ECHOVIDS_EMBEDDER_PROCESSES="1",
    )


@contextmanager
def frozen(stack: Stack, service: str) -> Iterator[None]:
    """SIGSTOP every process of `echovids worker SERVICE` under the stack (the Celery parent and its pool)."""
    assert stack.proc is not None
    procs = [
        p
        for p in psutil.Process(stack.proc.pid).children(recursive=True)
        if "worker" in (cmd := p.cmdline()) and service in cmd
    ]
    parents = {p.pid for p in procs}
    procs += [c for p in list(procs) for c in p.children(recursive=True) if c.pid not in parents]
    assert procs, f"no {service} worker found"
    for p in procs:
        os.kill(p.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for p in procs:
            os.kill(p.pid, signal.SIGCONT)


def _search(stack: Stack) -> tuple[dict, float]:
    wav = wav_bytes(0.3 * np.sin(np.arange(48_000) / 9.0) * np.linspace(0.2, 1, 48_000))
    started = time.monotonic()
    answer = httpx.post(f"{stack.url}/v1/searches", files={"file": ("q.wav", wav, "audio/wav")}, timeout=30)
    assert answer.status_code == 202, answer.text
    job = httpx.get(f"{stack.url}{answer.headers['Location']}", params={"wait": 30}, timeout=60).json()
    return job, time.monotonic() - started


def test_hung_search_workers_fail_the_search_on_time(deadline_stack: Stack) -> None:
    with frozen(deadline_stack, "search"):
        job, elapsed = _search(deadline_stack)
    assert job["status"] == "failed" and job["error"]["code"] == "search_unavailable", job
    searching_s = job["stage_ms"]["searching"] / 1000
    assert elapsed < searching_s + TIMEOUT_S + 1.0 + 0.5, (elapsed, job["stage_ms"])  # 0.5 s: the HTTP hops


def test_a_hung_embedder_fails_the_search_at_its_total_deadline(deadline_stack: Stack) -> None:
    with frozen(deadline_stack, "embedder"):
        job, elapsed = _search(deadline_stack)
    assert job["status"] == "failed" and job["error"]["code"] == "search_unavailable", job
    assert TOTAL_S - 0.5 < elapsed < TOTAL_S + 1.5, elapsed
    # Thawed, the stack is ready again (a search's own success is test_api_errors' business, without 2 s timeouts).
    deadline = time.monotonic() + 60
    while httpx.get(f"{deadline_stack.url}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the stack stayed unready after the thaw"
        time.sleep(0.5)


def test_no_shard_answering_is_a_coded_failure_from_the_merge(env: Path) -> None:
    """The deadline merge of a query that no shard answered fails it (it used to finish done with 0 results)."""
    from celery.exceptions import Ignore

    from echovids.jobs import JobStore
    from services.search.tasks import merge_answers

    store = JobStore()
    job = store.create_search(5, b"upload", wait_s=TIMEOUT_S)
    with pytest.raises(Ignore):
        merge_answers(job.id, 5, answers=[])
    settled = store.get(job.id)
    assert settled.status == "failed" and settled.error is not None and settled.error.code == "search_unavailable"
