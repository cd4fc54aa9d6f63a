"""The embedder under the threads pool: concurrent jobs share model calls (micro-batching) and stay apart."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from echovids.celery_app import create_celery
from echovids.harness import Stack, write_wav
from echovids.settings import Settings
from tests.conftest import external_redis, stack_on_own_redis
from tests.sounds import SR, synthetic_library

REDIS_URL = external_redis(9)  # this module's own database (see conftest)
SOUNDS = 6


@pytest.fixture(scope="module")
def threaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from stack_on_own_redis(
        tmp_path_factory.mktemp("threaded") / "data",
        REDIS_URL,
        ECHOVIDS_EMBEDDER_POOL="threads",
        ECHOVIDS_EMBEDDER_THREADS=str(SOUNDS),
        ECHOVIDS_EMBED_BATCH_WAIT_MS="20",
    )


def embed_batches() -> list[tuple[int, int]]:
    """The (frames, jobs) of every model call the stack's embedder reports."""
    app = create_celery(Settings(redis_url=REDIS_URL))
    replies = app.control.broadcast("embed_batches", reply=True, timeout=5)
    embedders = [reply for answer in replies for name, reply in answer.items() if name.startswith("embedder")]
    assert embedders and all(reply["pool"] == "threads" for reply in embedders), replies
    return [(frames, jobs) for reply in embedders for frames, jobs in reply["batches"]]


def test_concurrent_jobs_share_model_calls_and_each_gets_its_own_frames(threaded: Stack, tmp_path: Path) -> None:
    sounds = synthetic_library(SOUNDS, seconds=6.0, seed=33)
    folder = tmp_path / "lib"
    folder.mkdir()
    for i, sound in enumerate(sounds):
        write_wav(folder / f"t{i}.wav", sound)
    ingested = threaded.cli("ingest", str(folder))
    assert ingested.returncode == 0, ingested.stdout + ingested.stderr

    queries = [write_wav(tmp_path / f"q{i}.wav", sound[1 * SR : 4 * SR]) for i, sound in enumerate(sounds)]
    rounds, batches = 0, list[tuple[int, int]]()
    while rounds < 3 and not any(jobs_in_call > 1 for _, jobs_in_call in batches):
        # A round of simultaneous queries; another if none met in one model call.
        with ThreadPoolExecutor(SOUNDS) as pool:
            jobs = list(pool.map(threaded.search, queries))
        rounds += 1
        # Rows never cross between jobs sharing a call: each query finds its own sound.
        assert [job["results"][0]["title"] for job in jobs] == [f"t{i}" for i in range(SOUNDS)]
        batches = embed_batches()
    assert any(jobs_in_call > 1 for _, jobs_in_call in batches), batches
    # Every job went through the one model of the process (threads arriving together once loaded one each): the
    # ingests, the rounds of queries and the stack's own warm-up search (echovids.harness.Stack.start).
    assert sum(jobs_in_call for _, jobs_in_call in batches) == SOUNDS * (1 + rounds) + 1, batches
    assert max(frames for frames, _ in batches) <= Settings().embed_batch_frames
