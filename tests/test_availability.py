"""Availability against a stub YouTube on a real socket and the machine's Redis (database 14)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from echovids import availability, queues
from echovids.availability import VideoStatus, snapshot
from echovids.harness import ROOT
from echovids.queues import TaskName
from echovids.schemas import SearchResult, Source
from echovids.settings import Settings, get_settings
from services.availability.checker import open_checker
from services.availability.refresh import refresh
from services.availability.resolve import check_in_background, resolve_query
from tests.youtube_stub import Reply, YouTubeStub, audioset_video_ids

# Its own database: the other suites use 15, and every test here flushes this one.
REDIS_URL = os.environ.get("ECHOVIDS_AVAILABILITY_TEST_REDIS", "redis://127.0.0.1:6379/14")
IDS = audioset_video_ids()


def redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def stub() -> Iterator[YouTubeStub]:
    with YouTubeStub() as running:
        yield running


@pytest.fixture
def client() -> redis.Redis:
    if not redis_available():
        pytest.skip(f"no Redis at {REDIS_URL}")
    connection = redis.Redis.from_url(REDIS_URL)
    connection.flushdb()
    return connection


@pytest.fixture
def settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stub: YouTubeStub, client: redis.Redis
) -> Iterator[Settings]:
    """Settings pointed at the stub, a fresh data dir and the test database; retries back off briefly."""
    for name, value in stub_env(tmp_path, stub).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def stub_env(tmp_path: Path, stub: YouTubeStub) -> dict[str, str]:
    return {
        "ECHOVIDS_DATA_DIR": str(tmp_path / "data"),
        "ECHOVIDS_REDIS_URL": REDIS_URL,
        "ECHOVIDS_YOUTUBE_OEMBED_URL": stub.oembed_url,
        "ECHOVIDS_YOUTUBE_API_URL": stub.api_url,
        "ECHOVIDS_AVAILABILITY_BACKOFF_S": "0.01",
        "ECHOVIDS_AVAILABILITY_BACKOFF_MAX_S": "0.05",
        # Tests of the back-fill and caching logic must not depend on how loaded the machine is; the budget
        # itself is tested apart, at its default.
        "ECHOVIDS_AVAILABILITY_BUDGET_MS": "5000",
    }


def youtube(video_id: str) -> SearchResult:
    return SearchResult(
        clip_id=f"clip-{video_id}",
        title=video_id,
        source=Source(kind="youtube", youtube_id=video_id),
        match_start_s=0.0,
        query_start_s=0.0,
        score=0.5,
    )


def local_file(name: str) -> SearchResult:
    return SearchResult(
        clip_id=f"clip-{name}",
        title=name,
        source=Source(kind="file", file_name=name),
        match_start_s=0.0,
        query_start_s=0.0,
        score=0.5,
    )


def shown(results: list[SearchResult]) -> list[tuple[str | None, bool | None]]:
    return [(r.source.youtube_id or r.source.file_name, r.available) for r in results]


def test_availability_ids_come_from_audioset_examples() -> None:
    assert len(IDS) > 1000
    assert all(len(vid) == 11 for vid in IDS[:100])


def test_availability_cache_hit(settings: Settings, stub: YouTubeStub) -> None:
    videos = IDS[:5]
    first = asyncio.run(resolve_query([youtube(v) for v in videos], 5, settings))
    assert shown(first.results) == [(v, True) for v in videos]
    assert len(stub.calls) == 5

    again = asyncio.run(resolve_query([youtube(v) for v in videos], 5, settings))
    assert shown(again.results) == [(v, True) for v in videos]
    assert len(stub.calls) == 5, "the second query must be answered from the cache"
    stats = snapshot()
    assert (stats.cache_hits, stats.cache_misses, stats.cache_hit_rate) == (5, 5, 0.5)


def test_availability_ttls_by_status(settings: Settings, stub: YouTubeStub, client: redis.Redis) -> None:
    settings = settings.model_copy(
        update={
            "availability_ttl_available_s": 1000,
            "availability_ttl_gone_s": 50_000,
            "availability_ttl_unknown_s": 60,
        }
    )
    live, unembeddable, private, gone, odd, failing = IDS[10:16]
    stub.script(unembeddable, 403)
    stub.script(private, 401)
    stub.script(gone, 404)
    stub.script(odd, 400)
    stub.script(failing, 500)
    videos = [live, unembeddable, private, gone, odd, failing]
    resolved = asyncio.run(resolve_query([youtube(v) for v in videos], 6, settings))

    # Not embeddable still links (available), gone is dropped, odd answers and spent retries are unknown.
    assert shown(resolved.results) == [
        (live, True),
        (unembeddable, True),
        (private, True),
        (odd, None),
        (failing, None),
    ]
    assert resolved.deferred == [], "settled unknowns are cached for minutes, not re-checked in the background"
    expected = {
        live: ("available", 1000),
        unembeddable: ("unembeddable", 1000),
        private: ("unembeddable", 1000),
        gone: ("gone", 50_000),
        odd: ("unknown", 60),
        failing: ("unknown", 60),
    }
    for vid, (status, ttl) in expected.items():
        assert client.get(f"echovids:yt:{vid}") == status.encode()
        assert ttl - 5 <= client.ttl(f"echovids:yt:{vid}") <= ttl
    assert stub.calls_for(failing) == settings.availability_attempts
    assert snapshot().statuses == {"available": 1, "unembeddable": 2, "gone": 1, "unknown": 2}


def test_availability_budget_defers_slow_videos(settings: Settings, stub: YouTubeStub, client: redis.Redis) -> None:
    settings = settings.model_copy(
        update={"availability_budget_ms": Settings.model_fields["availability_budget_ms"].default}
    )
    fast, slow = IDS[20], IDS[21]
    stub.script(slow, Reply(200, delay_s=1.0))
    started = time.monotonic()
    resolved = asyncio.run(resolve_query([youtube(slow), youtube(fast)], 2, settings))
    elapsed = time.monotonic() - started

    assert settings.availability_budget_ms == 300
    assert elapsed < 0.8, f"the query waited {elapsed:.2f} s on a slow YouTube"
    assert shown(resolved.results) == [(slow, None), (fast, True)]
    assert resolved.deferred == [slow]
    assert client.get(f"echovids:yt:{slow}") is None

    # What the background task runs: the slow answer now lands in the cache.
    assert asyncio.run(check_in_background(resolved.deferred, settings)) == {slow: VideoStatus.available}
    assert client.get(f"echovids:yt:{slow}") == b"available"
    assert snapshot().deferred == 1


def test_availability_backfill_keeps_k(settings: Settings, stub: YouTubeStub) -> None:
    videos = IDS[30:42]
    dead = {videos[0], videos[2], videos[3], videos[4], videos[5], videos[7]}
    for vid in dead:
        stub.script(vid, 404)
    candidates = [local_file("rain.wav"), *(youtube(v) for v in videos)]
    resolved = asyncio.run(resolve_query(candidates, 5, settings))

    # Dead videos dropped, later candidates moved up in order; the local file stays available.
    live = [v for v in videos if v not in dead]
    assert shown(resolved.results) == [("rain.wav", True)] + [(v, True) for v in live[:4]]
    assert not any(r.available is False for r in resolved.results)


def test_availability_backfill_from_cache_without_calls(settings: Settings, stub: YouTubeStub) -> None:
    videos = IDS[50:56]
    for vid in videos[:3]:
        stub.script(vid, 404)
    asyncio.run(check_in_background(videos, settings))
    calls = len(stub.calls)
    resolved = asyncio.run(resolve_query([youtube(v) for v in videos], 3, settings))
    assert shown(resolved.results) == [(v, True) for v in videos[3:]]
    assert len(stub.calls) == calls


def test_availability_shared_rate_limit(settings: Settings, stub: YouTubeStub) -> None:
    settings = settings.model_copy(update={"availability_rate_per_s": 10.0, "availability_burst": 2})
    groups = [IDS[60:66], IDS[66:72]]
    answers: list[dict[str, VideoStatus]] = []

    async def one_worker(videos: list[str]) -> dict[str, VideoStatus]:
        # Its own event loop, Redis connection and HTTP client: only the bucket in Redis is shared.
        async with open_checker(settings) as checker:
            return await checker.check(videos, deadline=asyncio.get_running_loop().time() + 30)

    workers = [threading.Thread(target=lambda g=g: answers.append(asyncio.run(one_worker(g)))) for g in groups]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    elapsed = time.monotonic() - started

    assert sum(len(a) for a in answers) == 12
    # 12 calls at 10/s with a burst of 2: the last one cannot start before (12 - 2) / 10 s.
    assert elapsed >= 0.95, f"12 calls took {elapsed:.2f} s"
    times = sorted(t for t, _ in stub.calls)
    for i, at in enumerate(times):
        assert at - times[0] >= (i - 2) / 10.0 - 0.05, f"call {i} came too early"


def test_availability_rate_limit_within_budget(settings: Settings, stub: YouTubeStub, client: redis.Redis) -> None:
    default_budget = Settings.model_fields["availability_budget_ms"].default
    settings = settings.model_copy(
        update={"availability_rate_per_s": 1.0, "availability_burst": 2, "availability_budget_ms": default_budget}
    )
    videos = IDS[80:84]
    resolved = asyncio.run(resolve_query([youtube(v) for v in videos], 4, settings))

    # Two tokens in the bucket; the next slot is a second away, past the 300 ms budget: no call, no wait.
    assert len(stub.calls) == 2
    assert sorted(r.available for r in resolved.results if r.available is not None) == [True, True]
    assert len(resolved.deferred) == 2
    assert all(client.get(f"echovids:yt:{vid}") is None for vid in resolved.deferred)


def test_availability_retries_on_429_and_500(settings: Settings, stub: YouTubeStub) -> None:
    settings = settings.model_copy(update={"availability_timeout_s": 0.3})
    throttled, erroring, slow_once, broken = IDS[90:94]
    stub.script(throttled, 429, 429, 200)
    stub.script(erroring, 500, 503, 404)
    stub.script(slow_once, Reply(200, delay_s=1.0), 200)
    stub.script(broken, 500)
    statuses = asyncio.run(check_in_background([throttled, erroring, slow_once, broken], settings))

    assert statuses == {
        throttled: VideoStatus.available,
        erroring: VideoStatus.gone,
        slow_once: VideoStatus.available,
        broken: VideoStatus.unknown,
    }
    assert [stub.calls_for(v) for v in (throttled, erroring, slow_once, broken)] == [3, 3, 2, 3]
    stats = snapshot()
    assert (stats.youtube_calls, stats.youtube_errors) == (11, 8)


def test_availability_data_api_batches_of_50(settings: Settings, stub: YouTubeStub) -> None:
    settings = settings.model_copy(update={"youtube_api_key": "test-key"})
    videos = IDS[100:220]
    stub.script(videos[0], 404)
    stub.script(videos[1], 403)
    stub.script(videos[60], 500, 200)
    statuses = asyncio.run(check_in_background(videos, settings))

    assert statuses[videos[0]] is VideoStatus.gone
    assert statuses[videos[1]] is VideoStatus.unembeddable
    assert sum(s is VideoStatus.available for s in statuses.values()) == 118
    assert sorted(len(ids.split(",")) for _, ids in stub.calls) == [20, 50, 50, 50], "one retry of the 500"


def test_availability_refresh_catalog_oldest_first(settings: Settings, stub: YouTubeStub, client: redis.Redis) -> None:
    from echovids import catalog

    videos = IDS[300:306]
    with catalog.session() as s:
        for i, vid in enumerate(videos):
            s.add(catalog.Clip(id=f"c{i}", title=vid, source_kind="youtube", youtube_id=vid, shard=0, status="ready"))
    stub.script(videos[5], 404)
    first = asyncio.run(refresh(settings, batch=4))
    assert len(first) == 4
    second = asyncio.run(refresh(settings, batch=4))
    # Never-checked videos go first; then the least recently checked.
    assert set(second) >= set(videos) - set(first)
    assert {**first, **second}[videos[5]] is VideoStatus.gone
    checked = {availability.text(m) for m in client.zrange(availability.CHECKED, 0, -1)}
    assert checked == set(videos)

    with catalog.session() as s:
        s.delete(s.get(catalog.Clip, "c0"))
    client.zadd(availability.CHECKED, {videos[0]: 1.0})  # oldest of all, but no clip uses it any more
    third = asyncio.run(refresh(settings, batch=1))
    assert videos[0] not in third
    assert client.zscore(availability.CHECKED, videos[0]) is None
    assert snapshot().refreshed == len(first) + len(second) + len(third)


def test_availability_refresh_is_on_the_beat_schedule(settings: Settings) -> None:
    from echovids.schedule import beat_schedule

    entry = beat_schedule(settings)["refresh-availability"]
    assert entry["task"] == TaskName.REFRESH_AVAILABILITY
    assert entry["options"]["queue"] == queues.AVAILABILITY
    assert entry["schedule"] == settings.availability_refresh_interval_s


def test_availability_beat_sends_refresh(
    settings: Settings, stub: YouTubeStub, client: redis.Redis, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHOVIDS_")}
    env.update(stub_env(tmp_path, stub), ECHOVIDS_AVAILABILITY_REFRESH_INTERVAL_S="0.5")
    log_path = tmp_path / "beat.log"
    with log_path.open("wb") as log:
        beat = subprocess.Popen(
            [sys.executable, "-m", "echovids.cli", "beat"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        # No worker runs: the beat's messages wait in the availability queue (a Redis list).
        while not any(TaskName.REFRESH_AVAILABILITY.encode() in m for m in client.lrange(queues.AVAILABILITY, 0, -1)):
            assert beat.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
    finally:
        beat.terminate()
        beat.wait(30)


def test_availability_stats_endpoint(settings: Settings, stub: YouTubeStub) -> None:
    from fastapi.testclient import TestClient

    from services.gateway.app import create_app

    stub.script(IDS[401], 404)
    stub.script(IDS[402], 429)
    videos = IDS[400:403]
    asyncio.run(resolve_query([youtube(v) for v in videos], 3, settings))
    asyncio.run(resolve_query([youtube(v) for v in videos], 3, settings))

    with TestClient(create_app()) as http:
        answer = http.get("/v1/availability/stats")
    assert answer.status_code == 200
    body = answer.json()
    assert body["statuses"] == {"available": 1, "unembeddable": 0, "gone": 1, "unknown": 1}
    assert (body["cache_hits"], body["cache_misses"], body["cache_hit_rate"]) == (3, 3, 0.5)
    attempts = settings.availability_attempts
    assert body["youtube_calls"] == 2 + attempts
    assert body["youtube_errors"] == attempts


def test_availability_worker_finishes_job_and_checks_later(
    settings: Settings, stub: YouTubeStub, client: redis.Redis, tmp_path: Path
) -> None:
    from echovids.celery_app import create_celery
    from echovids.jobs import JobStore
    from echovids.schemas import JobStatus

    dead, slow, *live = IDS[500:506]
    stub.script(dead, 404)
    stub.script(slow, Reply(200, delay_s=1.0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHOVIDS_")}
    # A budget the 1 s video overruns and the prompt ones meet even on a loaded machine.
    env.update(stub_env(tmp_path, stub), PYTHONUNBUFFERED="1", ECHOVIDS_AVAILABILITY_BUDGET_MS="600")
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "echovids.cli", "worker", "availability"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        store = JobStore()
        job = store.create(kind="search", k=3)
        candidates = [youtube(v).model_dump(mode="json") for v in (dead, slow, *live)]
        create_celery(settings).send_task(
            TaskName.CHECK_AVAILABILITY, args=[candidates], kwargs={"job_id": job.id, "k": 3}, queue=queues.AVAILABILITY
        )
        deadline = time.monotonic() + 60
        while store.get(job.id).status != JobStatus.done:
            assert worker.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.1)
        finished = store.get(job.id)
        assert finished.results is not None
        assert shown(finished.results) == [(slow, None), (live[0], True), (live[1], True)]

        # The worker's background task settles the slow video.
        while client.get(f"echovids:yt:{slow}") != b"available":
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.1)
        assert client.get(f"echovids:yt:{dead}") == b"gone"
    finally:
        worker.terminate()
        worker.wait(30)
