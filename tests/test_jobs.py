"""Job records in a real Redis: field updates, blobs dropped on settling, the long poll, the search deadline."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from echovids.errors import EchovidsError, NotFound
from echovids.jobs import DEADLINES, JobStore, blob_keys, upload_key
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


def test_an_update_writes_only_its_fields_and_a_settled_job_keeps_its_status(env: Path) -> None:
    store = JobStore()
    job = store.create(k=3)
    store.update(job.id, status=JobStatus.searching, partial=True, missing_shards=[1])
    key = f"echovids:job:{job.id}"
    before = store.redis.hget(key, "created_at")
    store.set_status(job.id, JobStatus.checking)
    assert store.redis.hget(key, "created_at") == before
    seen = store.get(job.id)
    assert (seen.status, seen.partial, seen.missing_shards, seen.k) == (JobStatus.checking, True, [1], 3)
    assert (
        list(seen.stage_ms) == ["searching", "checking"]
        and 0 <= seen.stage_ms["searching"] <= seen.stage_ms["checking"]
    )
    store.fail(job.id, EchovidsError("boom"))
    store.finish(job.id, [])  # a late duplicate: the failed job stays failed
    assert store.get(job.id).status == JobStatus.failed
    with pytest.raises(NotFound):
        store.update("no-such-job", status=JobStatus.done)
    assert not store.redis.exists("echovids:job:no-such-job")


def test_a_search_that_settles_drops_its_upload_arrays_audio_and_deadline(env: Path) -> None:
    store = JobStore()
    job = store.create_search(3, b"RIFF...", wait_s=10)
    store.put_arrays(job.id, {"vectors": np.ones((2, 4), np.float16)}, audio=np.arange(8, dtype=np.float32))
    assert np.array_equal(store.get_audio(job.id), np.arange(8, dtype=np.float32))
    assert store.redis.zscore(DEADLINES, job.id) is not None
    store.set_status(job.id, JobStatus.searching)
    assert all(store.redis.exists(key) for key in blob_keys(job.id))
    store.finish(job.id, [])
    assert not any(store.redis.exists(key) for key in blob_keys(job.id))
    assert store.redis.zscore(DEADLINES, job.id) is None
    assert store.get_audio(job.id) is None


def test_a_settled_search_is_kept_minutes_and_an_ingest_hours(env: Path) -> None:
    """At a dozen searches a second, six hours of search records would outgrow Redis' memory: a search's record
    expires ECHOVIDS_SEARCH_RESULT_TTL_S after it settles (a later field write keeps that), an ingest's keeps the
    job TTL."""
    from echovids.jobs import _job_key
    from echovids.settings import get_settings

    settings = get_settings()
    store = JobStore()
    search, ingest = store.create_search(3, None, wait_s=10), store.create(kind="ingest", clip_id="clip-2")
    for job in (search, ingest):
        assert store.redis.ttl(_job_key(job.id)) > settings.search_result_ttl_s
    store.finish(search.id, [])
    store.finish(ingest.id, [])
    assert 0 < store.redis.ttl(_job_key(search.id)) <= settings.search_result_ttl_s
    store.update(search.id, progress="checked")  # a write after settling does not bring the hours back
    assert 0 < store.redis.ttl(_job_key(search.id)) <= settings.search_result_ttl_s
    assert store.redis.ttl(_job_key(ingest.id)) > settings.search_result_ttl_s
    with pytest.raises(NotFound, match="a search is kept 10 min after it ends"):
        store.get("0" * 32)


def test_a_failed_ingest_drops_the_clips_upload(env: Path) -> None:
    store = JobStore()
    job = store.create(kind="ingest", clip_id="clip-1")
    store.put_upload("clip-1", b"audio")
    store.fail(job.id, EchovidsError("not audio"))
    assert not store.redis.exists(upload_key("clip-1"))


def test_the_deadline_sweep_claims_a_query_once_its_wait_after_embedding_is_over(env: Path) -> None:
    from services.search.deadlines import sweep

    store = JobStore()
    store.redis.delete(DEADLINES)
    job = store.create_search(4, b"x", wait_s=3)
    now = time.time()
    assert sweep(store, 3, now=now) == []  # not due yet
    # Due by submission time, but still embedding: its wait has not begun, the entry moves on.
    assert sweep(store, 3, now=now + 3.5) == []
    assert store.redis.zscore(DEADLINES, job.id) == pytest.approx(now + 6.5)
    store.set_status(job.id, JobStatus.searching)
    began = store.get(job.id)
    searching_at = began.created_at.timestamp() + began.stage_ms["searching"] / 1000
    store.add_deadline(job.id, 0)  # looked at early: the entry moves to the end of the wait from its embedding
    assert sweep(store, 3, now=searching_at + 1) == []
    assert store.redis.zscore(DEADLINES, job.id) == pytest.approx(searching_at + 3)
    assert sweep(store, 3, now=searching_at + 3.01) == [(job.id, 4)]
    assert sweep(store, 3, now=searching_at + 10) == []  # claimed once
    # A query the merge already took is dropped from the set, never claimed.
    other = store.create_search(4, b"x", wait_s=0)
    store.set_status(other.id, JobStatus.searching)
    store.set_status(other.id, JobStatus.checking)
    assert store.redis.zscore(DEADLINES, other.id) is None


def test_a_search_sends_no_merge_task_and_its_deadline_is_watched(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The canvas as it lands in the broker: embed, then the shards; no delayed merge rides along."""
    from echovids.pipeline import submit_search
    from echovids.queues import EMBED, TaskName
    from echovids.settings import get_settings
    from tests.conftest import external_redis

    url = external_redis(8)  # no worker consumes this database: the message stays where it was sent
    monkeypatch.setenv("ECHOVIDS_REDIS_URL", url)
    get_settings.cache_clear()
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        job = submit_search(b"RIFF", k=5)
        (raw,) = client.lrange(EMBED, 0, -1)
        message = json.loads(raw)
        canvas = base64.b64decode(message["body"]).decode()
        assert message["headers"]["task"] == TaskName.EMBED_QUERY
        assert TaskName.SEARCH_SHARD in canvas and TaskName.SEARCH_MERGE not in canvas
        assert client.zscore(DEADLINES, job.id) is not None
        assert client.get(upload_key(job.id)) == b"RIFF"
    finally:
        client.flushdb()
