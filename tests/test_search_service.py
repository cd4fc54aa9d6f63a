"""The search service through real workers: several shards, a shard that is down, two sounds in one query."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from echovids.harness import ROOT, Stack, free_port, make_stack, write_wav
from echovids.jobs import DEADLINES, blob_keys
from tests.conftest import EXTERNAL_REDIS, external_redis, external_redis_available
from tests.sounds import SR, synthetic_library

SHARDS = 3


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    folder = tmp_path_factory.mktemp("shard-library")
    sounds = synthetic_library(12, seed=21)
    for i, sound in enumerate(sounds):
        write_wav(folder / f"s{i:02d}.wav", sound)
    return folder, sounds


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory, library) -> Iterator[Stack]:
    running = make_stack(
        tmp_path_factory.mktemp("sharded") / "data",
        None,
        ECHOVIDS_SEARCH_SHARDS=str(SHARDS),
        ECHOVIDS_SEARCH_DELTA_MAX="40",
    )
    running.start()
    done = running.cli("ingest", str(library[0]))
    assert done.returncode == 0, done.stderr
    yield running
    running.stop()


def test_clips_spread_over_shards_and_all_are_found(sharded: Stack, library, tmp_path: Path) -> None:
    shards = sharded.data_dir / "shards"
    per_shard = [len(list((shards / str(i) / "segments").glob("*.npz"))) for i in range(SHARDS)]
    assert sum(per_shard) == 12 and sum(1 for n in per_shard if n) >= 2, per_shard
    _, sounds = library
    for i in (0, 5, 10):
        job = sharded.search(write_wav(tmp_path / f"q{i}.wav", sounds[i][2 * SR : 5 * SR]))
        assert job["results"][0]["title"] == f"s{i:02d}"
        assert job["partial"] is False


def test_compaction_ran_and_results_survive_it(sharded: Stack, library, tmp_path: Path) -> None:
    # 12 clips of ~16 frames over 3 shards pass the delta limit of 40: each busy shard compacted itself.
    deadline = time.monotonic() + 30
    snapshot_dirs: list[Path] = []
    while time.monotonic() < deadline and not snapshot_dirs:
        snapshot_dirs = list((sharded.data_dir / "shards").glob("*/snapshots/v*/COMPLETE"))
        time.sleep(0.5)
    assert snapshot_dirs
    _, sounds = library
    job = sharded.search(write_wav(tmp_path / "q.wav", sounds[7][1 * SR : 4 * SR]))
    assert job["results"][0]["title"] == "s07"
    assert abs(job["results"][0]["match_start_s"] - 1.0) < 0.1


def test_two_sounds_in_one_query_are_both_found_with_their_offsets(sharded: Stack, library, tmp_path: Path) -> None:
    _, sounds = library
    query = np.concatenate([sounds[2][int(1.5 * SR) : int(4.5 * SR)], sounds[9][int(4.0 * SR) : int(7.0 * SR)]])
    job = sharded.search(write_wav(tmp_path / "two.wav", query), k=5)
    found = {r["title"]: r for r in job["results"]}
    assert {"s02", "s09"} <= set(list(found)[:2]), list(found)
    assert abs(found["s02"]["match_start_s"] - 1.5) < 0.5
    assert abs(found["s09"]["match_start_s"] - 4.0) < 0.5
    assert abs(found["s09"]["query_start_s"] - 3.0) < 0.5


def test_a_settled_search_leaves_no_blobs_results_or_deadline_behind(sharded: Stack, library, tmp_path: Path) -> None:
    """The upload, arrays, audio and shard answers go when the search settles; no task result is stored; nothing is
    left to sweep."""
    client = redis.Redis.from_url((sharded.data_dir / "redis" / "url").read_text().strip())
    _, sounds = library
    job = sharded.search(write_wav(tmp_path / "q.wav", sounds[3][1 * SR : 4 * SR]))
    assert job["status"] == "done" and job["results"][0]["title"] == "s03"
    assert not any(client.exists(key) for key in blob_keys(job["id"]))
    assert client.zscore(DEADLINES, job["id"]) is None
    assert list(client.scan_iter("celery-task-meta-*")) == []
    # The shards' answers went with the merge; its claim outlives the search's longest life, not hours.
    assert not client.exists(f"echovids:answers:{job['id']}")
    assert 0 < client.ttl(f"echovids:merged:{job['id']}") < 3600


@pytest.mark.skipif(not external_redis_available(), reason=f"no Redis at {EXTERNAL_REDIS}")
def test_a_shard_that_is_down_gives_a_partial_result(tmp_path: Path, library) -> None:
    """Two shards, only shard 0 served: the answer comes at the search timeout, partial, shard 1 named."""
    url = external_redis(11)
    redis.Redis.from_url(url).flushdb()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHOVIDS_")}
    env.update(
        ECHOVIDS_REDIS_URL=url,
        ECHOVIDS_DATA_DIR=str(tmp_path / "data"),
        ECHOVIDS_SEARCH_SHARDS="2",
        ECHOVIDS_SEARCH_TIMEOUT_S="3",
        ECHOVIDS_PORT=str(port),
    )
    cli = [sys.executable, "-m", "echovids.cli"]
    procs = [
        subprocess.Popen([*cli, "worker", "embedder"], env=env, cwd=ROOT),
        subprocess.Popen([*cli, "worker", "search", "--shard", "0"], env=env, cwd=ROOT),
        subprocess.Popen([*cli, "worker", "availability"], env=env, cwd=ROOT),
        subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "services.gateway.app:app", "--port", str(port)], env=env, cwd=ROOT
        ),
    ]
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=5).json()
                if ready.get("missing_consumers") == {"search": ["search.shard.1"]} and ready["cold_shards"] == [1]:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        # Shard 1 has no consumer and no process that loaded it; shard 0's process marked it warm.
        assert ready["missing_consumers"] == {"search": ["search.shard.1"]} and ready["cold_shards"] == [1]
        _, sounds = library
        query = write_wav(tmp_path / "q.wav", sounds[0][: 3 * SR])
        stack = Stack(data_dir=tmp_path / "data", port=port, env=env)
        # A cold worker's first query (loading its shard) may itself outlast a 3 s timeout on a loaded machine
        # and leave no shard answering: a first search warms shard 0, and only the second is judged.
        stack.search(query, timeout=30)
        started = time.monotonic()
        job = stack.search(query, timeout=30)
        assert job["status"] == "done"
        assert job["partial"] is True
        assert job["missing_shards"] == [1]
        assert 2.5 < time.monotonic() - started < 20
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_a_shard_counts_as_warm_only_while_a_live_process_renews_its_mark(env: Path, monkeypatch) -> None:
    """/readyz's cold_shards: a process that loaded its shards marks them; the mark of one that died or hung
    (nothing renews it) expires."""
    import redis

    from echovids import warm_shards
    from echovids.settings import get_settings

    # A database of its own: the suite's stacks on the shared Redis mark their shards warm while they run.
    own = EXTERNAL_REDIS.rsplit("/", 1)[0] + "/13"
    redis.Redis.from_url(own).flushdb()
    monkeypatch.setenv("ECHOVIDS_REDIS_URL", own)
    get_settings.cache_clear()
    monkeypatch.setattr(warm_shards, "TTL_S", 1)
    assert warm_shards.warm() == set()
    warm_shards.mark([0, 2])
    assert warm_shards.warm() == {0, 2}
    time.sleep(1.5)  # no renewal: the process is gone, or stopped
    assert warm_shards.warm() == set()
    stop = warm_shards.keep_marked([1])
    try:
        time.sleep(1.5)  # renewed every TTL_S / 3
        assert warm_shards.warm() == {1}
    finally:
        stop.set()
    time.sleep(1.5)
    assert warm_shards.warm() == set()
