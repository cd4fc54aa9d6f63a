"""Faults and hostile input: no request takes a service down, a poison clip fails once and durably.

Real Redis, real SQLite, real workers under `echovids serve`; nothing of Echovids is mocked.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from echovids.errors import AudioTooLong, UndecodableAudio
from echovids.harness import Stack, write_wav
from echovids.jobs import _job_key
from tests.conftest import EXTERNAL_REDIS, external_redis, stack_on_own_redis
from tests.sounds import synthetic_library, write_silent_flac

REDIS_URL = external_redis(8)  # this module's own database (see conftest)
KEY = "faults-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def hostile_wav(rate: int, bits: int, channels: int, data_bytes: int = 64_000) -> bytes:
    """A WAV whose fmt chunk says what its sender likes, followed by ``data_bytes`` of zeros."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data_bytes)
    return b"RIFF" + struct.pack("<I", len(body) + data_bytes) + body + bytes(data_bytes)


HOSTILE = {
    "rate 0xFFFFFFFF": hostile_wav(0xFFFFFFFF, 16, 1),
    "rate 0": hostile_wav(0, 16, 1),
    "0 bits": hostile_wav(16_000, 0, 1),
    "4 bits": hostile_wav(16_000, 4, 1),
    "65535 channels": hostile_wav(16_000, 16, 65_535),
    "0 channels": hostile_wav(16_000, 16, 0),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_wav_header_is_a_coded_error(name: str) -> None:
    from echovids.audio import decode_bytes

    with pytest.raises(UndecodableAudio) as caught:
        decode_bytes(HOSTILE[name], max_seconds=60.0)
    assert caught.value.status == 422 and "Unsupported audio" in caught.value.message


def test_a_long_wav_is_refused_before_its_samples_are_converted(tmp_path: Path) -> None:
    """The data chunk's size says the duration: a 2 h header over 64 KB of data is refused from the header."""
    from echovids.audio import parse_wav

    two_hours = 2 * 3600 * 16_000 * 2
    data = hostile_wav(16_000, 16, 1, data_bytes=0)[:-4] + struct.pack("<I", two_hours)
    data = data[:4] + struct.pack("<I", len(data) - 8 + two_hours) + data[8:]
    # A truncated file goes to ffmpeg (parse_wav's None) unless its claimed size passes the limit first.
    with pytest.raises(AudioTooLong):
        parse_wav(data + bytes(two_hours), max_seconds=60.0)


def test_an_unbounded_decode_stops_at_the_hard_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No caller can ask for an unbounded decode: without max_seconds the clip limit still holds, and ffmpeg is
    stopped once its output passes it (the pipe is read incrementally)."""
    from echovids.audio import decode_file, decode_stream
    from echovids.settings import get_settings

    flac = write_silent_flac(tmp_path / "long.flac", seconds=600)
    monkeypatch.setenv("ECHOVIDS_MAX_CLIP_S", "30")
    monkeypatch.setenv("ECHOVIDS_MAX_QUERY_S", "10")
    get_settings.cache_clear()
    try:
        started = time.monotonic()
        with pytest.raises(AudioTooLong):
            decode_file(flac)
        with pytest.raises(AudioTooLong):
            list(decode_stream(flac))
        assert time.monotonic() - started < 20
        with pytest.raises(AudioTooLong):
            decode_file(flac, max_seconds=5.0)
    finally:
        get_settings.cache_clear()


def test_a_memory_error_in_a_task_fails_its_job_and_not_the_worker(env: Path) -> None:
    """Celery takes a MemoryError for the end of the worker process; a task's own must end only its job."""
    from celery import Celery

    from echovids.jobs import JobStore
    from echovids.schemas import JobStatus
    from echovids.tasks import TASK_OPTIONS

    app = Celery("faults", broker=EXTERNAL_REDIS, backend=EXTERNAL_REDIS)

    @app.task(name="tests.faults.allocate", **TASK_OPTIONS)
    def allocate(self: object, *, job_id: str) -> None:
        raise MemoryError("Unable to allocate 128. GiB for an array")

    store = JobStore()
    job = store.create(kind="search")
    result = allocate.apply(kwargs={"job_id": job.id})  # Celery's own tracer, as a worker runs it
    assert result.state == "IGNORED"
    settled = store.get(job.id)
    assert settled.status == JobStatus.failed and settled.error is not None
    assert settled.error.code == "payload_too_large"


def test_the_upkeep_never_resends_a_clip_that_failed_durably(env: Path, tmp_path: Path) -> None:
    """Attempts live in the catalog: with Redis flushed (the old once-only key lost) a clip whose processing was
    started too often is failed, not sent round again."""
    from datetime import UTC, datetime, timedelta

    from echovids import catalog, clip_audio
    from echovids.library import list_clips, reconcile_pending
    from echovids.settings import get_settings

    redis.Redis.from_url(EXTERNAL_REDIS).flushdb()
    path = write_wav(tmp_path / "p.wav", synthetic_library(1, seconds=3.0, seed=5)[0])
    old = datetime.now(UTC) - timedelta(days=1)
    ids = {"poison": get_settings().library_max_attempts, "resent": 1, "fresh": 0}
    with catalog.session() as s:
        for clip_id, attempts in ids.items():
            s.add(
                catalog.Clip(
                    id=clip_id,
                    title=clip_id,
                    source_kind="file",
                    shard=0,
                    created_at=old,
                    attempts=attempts,
                    resubmissions=1 if clip_id == "resent" else 0,
                )
            )
    for clip_id in ids:
        clip_audio.save(clip_id, path.read_bytes(), "p.wav")
    settled = reconcile_pending(older_than_s=0)
    assert sorted(settled.failed) == ["poison", "resent"] and settled.resubmitted == ["fresh"]
    # Failed for good, their stored audio is gone; the clip sent again keeps its own.
    assert clip_audio.find("poison") is None and clip_audio.find("resent") is None
    assert clip_audio.find("fresh") is not None
    redis.Redis.from_url(EXTERNAL_REDIS).flushdb()  # every Redis trace of those decisions is gone
    again = reconcile_pending(older_than_s=0)
    assert again.resubmitted == [] and "poison" not in again.failed
    failed = list_clips(status="failed")
    assert {c.clip_id for c in failed.items} >= {"poison", "resent"}
    assert all(c.error is not None and c.error.code == "processing_failed" for c in failed.items)


def test_the_upkeep_leaves_a_long_audioset_import_at_work(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An AudioSet import sends its clips' index tasks far faster than a shard indexes them: a clip may wait in its
    shard's queue longer than the upkeep's age, and has no stored audio to be sent again from. Its row names its
    job and the broker holds its task, so the upkeep leaves it alone."""
    from echovids import catalog
    from echovids.audioset import FeatureRecord, ImportReport, Segment, _submit, vggish_space
    from echovids.library import Reconciled, reconcile_pending
    from echovids.settings import get_settings

    url = external_redis(4)  # a database of its own, which no worker consumes: the tasks stay queued
    monkeypatch.setenv("ECHOVIDS_REDIS_URL", url)
    get_settings.cache_clear()
    redis.Redis.from_url(url).flushdb()
    features = np.random.default_rng(3).integers(0, 256, size=(10, 128)).astype(np.uint8)
    items = [
        (
            Segment(ytid=f"AbCdEfGhI{i:02d}", start_s=0.0, end_s=10.0, labels=[]),
            FeatureRecord(f"AbCdEfGhI{i:02d}", 0.0, 10.0, [], features),
        )
        for i in range(3)
    ]
    sent: dict[str, str] = {}
    _submit(items, vggish_space(), ImportReport(), sent)
    rows = catalog.get_clips(list(sent))
    assert {clip_id: row.job_id for clip_id, row in rows.items()} == sent
    assert reconcile_pending(older_than_s=0) == Reconciled([], [])
    assert {row.status for row in catalog.get_clips(list(sent)).values()} == {"pending"}
    # Lost with Redis, tasks and vectors both: nothing here can index them again, and the error says what can.
    redis.Redis.from_url(url).flushdb()
    assert sorted(reconcile_pending(older_than_s=0).failed) == sorted(sent)
    for row in catalog.get_clips(list(sent)).values():
        assert row.status == "failed" and row.error_code == "not_found", row
        assert "run the import again" in str(row.error_message), row.error_message


def test_a_clip_task_delivered_again_after_its_chain_finished_changes_nothing(env: Path) -> None:
    """A worker stopped between finishing a clip's task and its ack: the broker delivers the message again once
    the clip is ready and its upload gone. Run again by Celery's own tracer, both tasks of the ingest chain end
    at once; the clip stays ready and its job done."""
    from echovids import catalog
    from echovids.jobs import JobStore
    from echovids.schemas import ClipEmbedded, ClipStatus, EmbeddingSpace, JobStatus
    from services.embedder.tasks import embed_clip
    from services.search.tasks import index_clip

    store = JobStore()
    with catalog.session() as s:
        s.add(catalog.Clip(id="indexed", title="indexed", source_kind="file", shard=0, status=ClipStatus.ready))
    job = store.create(kind="library", clip_id="indexed")
    store.update(job.id, status=JobStatus.done)
    embedded = ClipEmbedded(
        clip_id="indexed",
        space=EmbeddingSpace(model="yamnet", version="tflite-1", dim=1024),
        n_frames=6,
        duration_s=3.0,
        content_hash="0" * 64,
        labels=[],
    ).model_dump()
    results = [
        embed_clip.apply(kwargs={"clip_id": "indexed", "job_id": job.id}),
        index_clip.apply(args=(embedded,), kwargs={"clip_id": "indexed", "job_id": job.id, "shard": 0}),
    ]
    assert [r.state for r in results] == ["IGNORED", "IGNORED"]
    assert catalog.get_clip("indexed").status == ClipStatus.ready
    assert store.get(job.id).status == JobStatus.done and store.get(job.id).error is None
    assert catalog.get_clip("indexed").attempts == 0  # a finished clip's redelivery is no new attempt


# -- against a running stack -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from stack_on_own_redis(tmp_path_factory.mktemp("fault-stack") / "data", REDIS_URL, ECHOVIDS_API_KEY=KEY)


def _poll(stack: Stack, location: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{stack.url}{location}", params={"wait": 5}, timeout=15).json()
        if job["status"] in ("done", "failed"):
            return job
    raise AssertionError(f"job {location} still {job['status']}")


def test_hostile_uploads_fail_their_jobs_and_the_stack_stays_up(fault_stack: Stack, tmp_path: Path) -> None:
    bad = HOSTILE["rate 0xFFFFFFFF"]
    answer = httpx.post(f"{fault_stack.url}/v1/searches", files={"file": ("bad.wav", bad, "audio/wav")}, timeout=30)
    if answer.status_code == 202:  # refused at the door or failed by the embedder: a coded error either way
        job = _poll(fault_stack, answer.headers["Location"])
        assert job["status"] == "failed" and job["error"]["code"] == "undecodable_audio", job
    else:
        assert answer.status_code == 422 and answer.json()["code"] == "undecodable_audio", answer.text

    added = httpx.post(f"{fault_stack.url}/v1/library", files={"file": ("bad.wav", bad)}, headers=AUTH, timeout=30)
    assert added.status_code == 202, added.text
    clip_id = added.json()[0]["clip_id"]
    deadline = time.monotonic() + 60
    while (clip := httpx.get(f"{fault_stack.url}/v1/library/{clip_id}").json())["status"] == "pending":
        assert time.monotonic() < deadline, clip
        time.sleep(0.3)
    assert clip["status"] == "failed" and clip["error"]["code"] == "undecodable_audio", clip
    # Durably: listed as failed from the catalog alone, with its code, once every Redis trace of it is gone.
    redis.Redis.from_url(REDIS_URL).delete(_job_key(clip["job_id"]))
    listed = httpx.get(f"{fault_stack.url}/v1/library", params={"status": "failed"}).json()
    assert [(c["clip_id"], c["error"]["code"]) for c in listed["items"]] == [(clip_id, "undecodable_audio")]

    page = httpx.get(f"{fault_stack.url}/v1/library", params={"page": "999999999999999999999"})
    assert page.status_code == 422 and page.json()["code"] == "validation_error"

    assert httpx.get(f"{fault_stack.url}/readyz", timeout=10).status_code == 200
    query = write_wav(tmp_path / "q.wav", synthetic_library(1, seconds=4.0, seed=9)[0] * np.float32(0.5))
    assert fault_stack.search(query, k=3)["status"] == "done"


def test_the_embedded_redis_is_durable_private_and_never_evicts(tmp_path: Path) -> None:
    import os
    import signal
    import stat

    from echovids.redis_conn import embedded_port, start_embedded
    from echovids.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", redis_url=None)
    url, proc = start_embedded(settings)
    try:
        workdir = tmp_path / "data" / "redis"
        for name in ("password", "url", "redis.conf"):
            assert stat.S_IMODE((workdir / name).stat().st_mode) == 0o600, name
        assert stat.S_IMODE(workdir.stat().st_mode) == 0o700
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=embedded_port(url)).set("x", 1)  # no password, no access
        client = redis.Redis.from_url(url)
        config = {k: client.config_get(k)[k] for k in ("appendonly", "appendfsync", "maxmemory-policy", "save")}
        assert config == {
            "appendonly": "yes",
            "appendfsync": "everysec",
            "maxmemory-policy": "noeviction",
            "save": "900 1 60 1000",
        }
        assert int(client.config_get("maxmemory")["maxmemory"]) == settings.redis_maxmemory_mb * 2**20
        assert client.config_get("requirepass")["requirepass"] == (workdir / "password").read_text()
        client.set("acknowledged", "kept")
        time.sleep(1.5)  # appendfsync everysec: what is a second old is on disk
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        url2, proc = start_embedded(settings, port=embedded_port(url))
        assert url2 == url  # same password, same port: every process's URL still works
        assert redis.Redis.from_url(url).get("acknowledged") == b"kept"
    finally:
        proc.kill()
        proc.wait(10)


def test_while_redis_is_down_the_gateway_answers_a_coded_503(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from echovids.harness import free_port
    from echovids.settings import get_settings
    from services.gateway.app import create_app

    monkeypatch.setenv("ECHOVIDS_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    monkeypatch.setenv("ECHOVIDS_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        client = TestClient(create_app(), raise_server_exceptions=False)
        query = write_wav(tmp_path / "q.wav", synthetic_library(1, seconds=2.0, seed=3)[0]).read_bytes()
        for answer in (
            client.post("/v1/searches", files={"file": ("q.wav", query, "audio/wav")}),
            client.get("/v1/searches/0123456789abcdef0123456789abcdef"),
        ):
            assert answer.status_code == 503, answer.text
            assert answer.json()["code"] == "service_unavailable" and answer.headers["Retry-After"] == "2"
    finally:
        get_settings.cache_clear()


def test_a_full_redis_is_a_coded_503_and_reads_still_answer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Redis at its maxmemory (noeviction) refuses the upload's write: the client is told to come back later."""
    import subprocess

    from fastapi.testclient import TestClient

    from echovids.harness import free_port
    from echovids.settings import get_settings
    from services.gateway.app import create_app

    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        direct = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                direct.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        direct.config_set("maxmemory-policy", "noeviction")
        direct.config_set("maxmemory", 1)  # every write that needs memory is refused from here on
        monkeypatch.setenv("ECHOVIDS_REDIS_URL", f"redis://127.0.0.1:{port}/0")
        monkeypatch.setenv("ECHOVIDS_DATA_DIR", str(tmp_path / "data"))
        get_settings.cache_clear()
        client = TestClient(create_app(), raise_server_exceptions=False)
        query = write_wav(tmp_path / "q.wav", synthetic_library(1, seconds=2.0, seed=3)[0]).read_bytes()
        answer = client.post("/v1/searches", files={"file": ("q.wav", query, "audio/wav")})
        assert answer.status_code == 503, answer.text
        assert answer.json()["code"] == "service_unavailable" and answer.headers["Retry-After"] == "30"
        unknown = client.get("/v1/searches/0123456789abcdef0123456789abcdef")
        assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"
    finally:
        server.kill()
        server.wait()
        get_settings.cache_clear()


def test_serve_heals_after_kill_9_of_an_embedder_worker_and_of_redis(tmp_path: Path) -> None:
    """Under `echovids serve` (embedded Redis) a killed process is restarted, and the stack is ready again."""
    import os
    import signal
    import subprocess

    from echovids.harness import make_stack

    stack = make_stack(tmp_path / "data", None)
    stack.start()
    try:
        query = write_wav(tmp_path / "q.wav", synthetic_library(1, seconds=4.0, seed=11)[0] * np.float32(0.5))
        assert stack.search(query, k=3)["status"] == "done"
        for pattern in ("echovids.cli worker embedder", "redis-server"):
            found = subprocess.run(["pgrep", "-f", "-P", str(stack.proc.pid), pattern], capture_output=True, text=True)
            pids = [int(p) for p in found.stdout.split()]
            assert pids, pattern
            os.kill(pids[0], signal.SIGKILL)
            time.sleep(1.0)
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{stack.url}/readyz", timeout=3).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"not ready again after kill -9 of {pattern}"
                time.sleep(0.5)
            assert stack.search(query, k=3, timeout=120)["status"] == "done"
    finally:
        stack.stop()
    assert stack.proc is not None and stack.proc.poll() is not None  # Ctrl-C stopped it all
    assert subprocess.run(["pgrep", "-f", str(tmp_path / "data")], capture_output=True).returncode == 1


def test_an_import_waits_while_its_clips_settle_and_reads_the_catalog_only_as_far_as_the_shards_got(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`import-audioset` waits clip by clip in the order it sent them: a pass stops at the first batch the shards
    have not reached, and when nothing has settled for the timeout the last pass reads every clip."""
    from echovids import audioset, catalog
    from echovids.audioset import ImportReport, _wait

    statuses = ["ready", "ready", "pending", "pending", "ready", "failed"]
    with catalog.session() as s:
        for i, status in enumerate(statuses):
            s.add(catalog.Clip(id=f"w{i}", title="t", source_kind="youtube", shard=0, status=status))
    monkeypatch.setattr(audioset, "WAIT_BATCH", 2)
    reads: list[list[str]] = []
    real_get_clips = catalog.get_clips
    monkeypatch.setattr(catalog, "get_clips", lambda ids: (reads.append(list(ids)), real_get_clips(ids))[1])
    report = ImportReport()
    started = time.monotonic()
    _wait({f"w{i}": f"job{i}" for i in range(len(statuses))}, report, timeout_s=0.5)
    assert 0.5 <= time.monotonic() - started < 5
    assert report.added == 3 and sorted(report.failed) == ["w2", "w3", "w5"]
    assert reads[0] == ["w0", "w1"] and reads[1] == ["w2", "w3"] and reads[2] == ["w2", "w3"]  # no further
    assert reads[-2:] == [["w2", "w3"], ["w4", "w5"]]  # the last pass: all of them


def test_an_import_sends_no_more_while_the_shards_queues_are_full(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a release is faster than indexing it: past ``in_flight`` queued clips the importer waits, so their
    vectors never fill Redis (a 200 000-segment import did at about 48 000)."""
    import threading

    from echovids import queues
    from echovids.audioset import FeatureRecord, ImportReport, Segment, _hold_back, _submit, vggish_space
    from echovids.broker import queued
    from echovids.settings import get_settings

    url = external_redis(4)  # no worker consumes it: what is sent stays queued
    monkeypatch.setenv("ECHOVIDS_REDIS_URL", url)
    monkeypatch.setenv("ECHOVIDS_SEARCH_SHARDS", "1")  # every clip on shard 0's queue, whatever ran before
    get_settings.cache_clear()
    client = redis.Redis.from_url(url)
    client.flushdb()
    features = np.random.default_rng(5).integers(0, 256, size=(10, 128)).astype(np.uint8)
    ids = [f"HoLdBaCk{i:03d}" for i in range(3)]
    items = [
        (Segment(ytid=y, start_s=0.0, end_s=10.0, labels=[]), FeatureRecord(y, 0.0, 10.0, [], features)) for y in ids
    ]
    _submit(items, vggish_space(), ImportReport(), {})
    shard_queues = [queues.shard_queue(0)]
    assert queued(shard_queues) == 3
    released = threading.Event()
    holder = threading.Thread(target=lambda: (_hold_back(3), released.set()), daemon=True)
    holder.start()
    assert not released.wait(0.6)  # three queued: it waits
    client.lpop(queues.shard_queue(0))  # a shard takes one
    assert released.wait(5) and queued(shard_queues) == 2
    holder.join(5)
