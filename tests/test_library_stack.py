"""The library on a running Echovids: bulk ingest (skips, duplicates, bad files, resume after a kill) and the
HTTP library (add, search, delete) with real workers and YAMNet."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, text

from echovids.harness import ROOT, Stack, write_wav
from tests.conftest import external_redis, stack_on_own_redis
from tests.sounds import SR, mix_at_snr, synthetic_library

REDIS_URL = external_redis(10)  # this module's own database (see conftest)

KEY = "library-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def lib_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from stack_on_own_redis(
        tmp_path_factory.mktemp("lib-stack") / "data", REDIS_URL, ECHOVIDS_SEARCH_DELTA_MAX="64", ECHOVIDS_API_KEY=KEY
    )


def rows(stack: Stack) -> list[dict]:
    engine = create_engine(f"sqlite:///{stack.data_dir / 'catalog.sqlite3'}")
    with engine.connect() as c:
        out = [
            dict(r._mapping)
            for r in c.execute(
                text("SELECT id, title, file_name, file_sha256, status, duplicate_of, duration_s, job_id FROM clips")
            )
        ]
    engine.dispose()
    return out


def ffmpeg(*args: str) -> None:
    from echovids.audio import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def test_ingest_skips_reports_and_deduplicates(lib_stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "lib"
    (folder / "sub").mkdir(parents=True)
    sounds = synthetic_library(6, seconds=5.0, seed=21)
    for i, sound in enumerate(sounds):
        write_wav((folder / "sub" if i % 2 else folder) / f"a{i}.wav", sound)
    # Other bytes, same decoded audio (lossless FLAC of a0): a duplicate, not indexed twice.
    ffmpeg("-i", str(folder / "a0.wav"), str(folder / "a0_copy.flac"))
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 10)
    (folder / "notes.txt").write_text("not an audio suffix: ignored")

    first = lib_stack.cli("ingest", str(folder), "--labels", "Studio, Take 1")
    assert first.returncode == 1, first.stdout + first.stderr
    assert "ingested 7 of 8 files (6 new, 0 already in the library, 1 duplicates" in first.stdout
    failed = [line for line in first.stderr.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and str(folder / "broken.wav") in failed[0] and "decoded" in failed[0], first.stderr

    by_name = {r["file_name"]: r for r in rows(lib_stack)}
    # Both copies are indexed concurrently; whichever claims its audio first is kept, the other points at it.
    pair = sorted((by_name["a0.wav"], by_name["a0_copy.flac"]), key=lambda r: r["status"] != "ready")
    kept, copy = pair
    assert (kept["status"], copy["status"]) == ("ready", "duplicate"), pair
    assert copy["duplicate_of"] == kept["id"]
    assert all(by_name[f"a{i}.wav"]["status"] == "ready" for i in range(1, 6))
    assert by_name["broken.wav"]["status"] == "failed"
    listed = httpx.get(f"{lib_stack.url}/v1/library", params={"label": "Take 1", "page_size": 200}).json()
    assert listed["total"] == 8

    again = lib_stack.cli("ingest", str(folder))
    assert "ingested 7 of 8 files (0 new, 7 already in the library, 0 duplicates" in again.stdout, again.stdout
    assert Counter(r["file_name"] for r in rows(lib_stack)) == Counter({r["file_name"]: 1 for r in rows(lib_stack)})


def test_ingest_resumes_after_a_kill_with_nothing_twice_and_nothing_lost(lib_stack: Stack, tmp_path: Path) -> None:
    folder = tmp_path / "resume"
    folder.mkdir()
    sounds = synthetic_library(14, seconds=12.0, seed=33)
    for i, sound in enumerate(sounds):
        write_wav(folder / f"r{i:02d}.wav", sound)
    before = {r["id"] for r in rows(lib_stack)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "echovids.cli", "ingest", str(folder), "--window", "3"],
        env=lib_stack.env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ours = [r for r in rows(lib_stack) if r["id"] not in before]
        if len(ours) >= 4:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # a crash: no cleanup at all
    proc.wait()
    ours = [r for r in rows(lib_stack) if r["id"] not in before]
    assert 4 <= len(ours) < 14, "the kill should land mid-way"
    # And a crash in the worst place: the row written, the tasks never sent (no job id).
    engine = create_engine(f"sqlite:///{lib_stack.data_dir / 'catalog.sqlite3'}")
    import hashlib

    orphan = folder / "r13.wav"
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO clips (id, title, source_kind, file_name, labels, shard, n_frames, status, created_at, "
                "file_sha256) VALUES ('orphan0000', 'r13', 'file', 'r13.wav', '[]', 0, 0, 'pending', "
                "CURRENT_TIMESTAMP, :h)"
            ),
            {"h": hashlib.sha256(orphan.read_bytes()).hexdigest()},
        )
    engine.dispose()

    resumed = lib_stack.cli("ingest", str(folder), "--window", "3")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "ingested 14 of 14 files" in resumed.stdout
    ours = [r for r in rows(lib_stack) if r["id"] not in before]
    names = Counter(r["file_name"] for r in ours)
    assert names == Counter({f"r{i:02d}.wav": 1 for i in range(14)}), names
    assert all(r["status"] == "ready" for r in ours), [(r["file_name"], r["status"]) for r in ours]
    assert next(r for r in ours if r["file_name"] == "r13.wav")["id"] == "orphan0000"
    # Every clip's frames are in its shard exactly once.
    segments = list((lib_stack.data_dir / "shards").rglob("*.npz"))
    assert Counter(p.stem for p in segments)["orphan0000"] == 1
    assert {r["id"] for r in ours} <= {p.stem for p in segments}


def test_http_add_search_delete(lib_stack: Stack, tmp_path: Path) -> None:
    sound = synthetic_library(3, seconds=8.0, seed=44)[1]
    path = write_wav(tmp_path / "http_clip.wav", sound)
    with path.open("rb") as f:
        refused = httpx.post(f"{lib_stack.url}/v1/library", files={"file": ("http_clip.wav", f, "audio/wav")})
    assert refused.status_code == 401
    with path.open("rb") as f:
        answer = httpx.post(
            f"{lib_stack.url}/v1/library",
            files={"file": ("http_clip.wav", f, "audio/wav")},
            data={"title": "HTTP clip", "labels": "Tone"},
            headers=AUTH,
        )
    assert answer.status_code == 202, answer.text
    clip_id = answer.json()[0]["clip_id"]
    deadline = time.monotonic() + 60
    while (clip := httpx.get(f"{lib_stack.url}/v1/library/{clip_id}").json())["status"] == "pending":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert clip["status"] == "ready" and clip["space"].startswith("yamnet") and clip["duration_s"] == 8.0
    rng = np.random.default_rng(5)
    excerpt = sound[2 * SR : 5 * SR]
    query = write_wav(tmp_path / "q.wav", mix_at_snr(excerpt, rng.standard_normal(excerpt.size), 10))
    job = lib_stack.search(query, k=3)
    assert job["results"][0]["clip_id"] == clip_id, job
    assert abs(job["results"][0]["match_start_s"] - 2.0) <= 0.5

    assert httpx.delete(f"{lib_stack.url}/v1/library/{clip_id}").status_code == 401
    assert httpx.delete(f"{lib_stack.url}/v1/library/{clip_id}", headers=AUTH).status_code == 204
    assert httpx.get(f"{lib_stack.url}/v1/library/{clip_id}").status_code == 404
    time.sleep(0.5)
    job = lib_stack.search(query, k=3)
    assert clip_id not in [r["clip_id"] for r in job["results"]]
    shard_dirs = list((lib_stack.data_dir / "shards").glob(f"*/tombstones/{clip_id}"))
    assert len(shard_dirs) == 1


def wait_for_status(stack: Stack, clip_id: str, wanted: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while (clip := httpx.get(f"{stack.url}/v1/library/{clip_id}").json())["status"] != wanted:
        assert time.monotonic() < deadline, clip
        time.sleep(0.2)
    return clip


def upload(stack: Stack, path: Path) -> str:
    with path.open("rb") as f:
        answer = httpx.post(f"{stack.url}/v1/library", files={"file": (path.name, f)}, headers=AUTH)
    assert answer.status_code == 202, answer.text
    return str(answer.json()[0]["clip_id"])


def test_deleting_an_original_lets_its_duplicate_take_over(lib_stack: Stack, tmp_path: Path) -> None:
    sound = synthetic_library(2, seconds=6.0, seed=61)[0]
    original = upload(lib_stack, write_wav(tmp_path / "orig.wav", sound))
    wait_for_status(lib_stack, original, "ready")
    ffmpeg("-i", str(tmp_path / "orig.wav"), str(tmp_path / "copy.flac"))  # other bytes, same audio
    copy = upload(lib_stack, tmp_path / "copy.flac")
    assert wait_for_status(lib_stack, copy, "duplicate")["duplicate_of"] == original

    assert httpx.delete(f"{lib_stack.url}/v1/library/{original}", headers=AUTH).status_code == 204
    wait_for_status(lib_stack, copy, "ready")  # indexed now from its own stored audio
    query = write_wav(tmp_path / "q.wav", sound[SR : 4 * SR])
    assert lib_stack.search(query, k=3)["results"][0]["clip_id"] == copy


def test_upkeep_task_runs_a_stuck_clip_again(lib_stack: Stack, tmp_path: Path) -> None:
    """A clip left pending without a job (a crash between the row and the send) is processed by the upkeep."""
    from celery import Celery

    clip_id = "stuck0000000000000000000000000000"
    write_wav(lib_stack.data_dir / "audio" / f"{clip_id}.wav", synthetic_library(2, seconds=5.0, seed=71)[1])
    engine = create_engine(f"sqlite:///{lib_stack.data_dir / 'catalog.sqlite3'}")
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO clips (id, title, source_kind, file_name, labels, shard, n_frames, status, created_at) "
                "VALUES (:id, 'stuck', 'file', 'stuck.wav', '[]', 0, 0, 'pending', '2020-01-01 00:00:00.000000')"
            ),
            {"id": clip_id},
        )
    engine.dispose()
    Celery(broker=REDIS_URL).send_task("echovids.search.reconcile_library", queue="search")
    assert wait_for_status(lib_stack, clip_id, "ready")["duration_s"] == 5.0
