"""Search by description on a running Echovids (real workers, YAMNet, the packaged sentence encoder): a text finds
the clips and the moment, the requests it refuses, filters that still give k results, deletes, and a library
indexed before class scores were stored, re-indexed by `echovids reindex-classes`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from echovids.audio import decode_file
from echovids.audio_params import SAMPLE_RATE
from echovids.harness import (
    Stack,
    submit_search,
    submit_text_search,
    text_search_and_wait,
    wait_for_job,
    wav_bytes,
    write_wav,
)
from tests.conftest import external_redis, stack_on_own_redis

REDIS_URL = external_redis(7)  # this module's own database (see conftest)
ESC10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "esc10"
CLASSES = ("dog_bark", "rain", "rooster", "clock_tick")
PER_CLASS = 3
BARK_AT_S = 6.0  # where the dog barks in the long recording


def esc10_files(label: str, count: int) -> list[Path]:
    return sorted((ESC10 / "audio").glob(f"esc10_{label}_*.ogg"))[:count]


@pytest.fixture(scope="module")
def text_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not (ESC10 / "audio").is_dir():
        pytest.skip(f"no ESC-10 at {ESC10}")
    root = tmp_path_factory.mktemp("text-stack")
    folder = root / "library"
    folder.mkdir()
    for label in CLASSES:
        for path in esc10_files(label, PER_CLASS):
            (folder / path.name).write_bytes(path.read_bytes())
    # A longer recording: quiet noise, a dog's bark at BARK_AT_S, quiet noise again.
    bark = decode_file(esc10_files("dog_bark", PER_CLASS + 1)[-1])
    rng = np.random.default_rng(0)
    quiet = lambda seconds: (0.003 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)  # noqa: E731
    write_wav(folder / "long_recording.wav", np.concatenate([quiet(BARK_AT_S), bark[: 3 * SAMPLE_RATE], quiet(6.0)]))
    for running in stack_on_own_redis(root / "data", REDIS_URL, ECHOVIDS_MAX_TEXT_CHARS="80"):
        done = running.cli("ingest", str(folder))
        assert done.returncode == 0, done.stdout + done.stderr
        yield running


def titles(job: dict) -> list[str]:
    return [r["title"] for r in job["results"]]


def test_a_description_finds_the_clips_and_the_moment(text_stack: Stack) -> None:
    with httpx.Client(base_url=text_stack.url, timeout=30) as client:
        job = text_search_and_wait(client, "a dog barking loudly", k=4)
    assert job["status"] == "done", job
    assert job["text"] == "a dog barking loudly"
    assert job["text_classes"] and abs(sum(c["weight"] for c in job["text_classes"]) - 1) < 0.01
    assert any(c["name"] in ("Bark", "Dog", "Bow-wow", "Yip") for c in job["text_classes"][:3])
    found = titles(job)
    assert len(found) == 4
    assert all("dog_bark" in t or t == "long_recording" for t in found), found
    long = next(r for r in job["results"] if r["title"] == "long_recording")
    assert BARK_AT_S - 0.5 <= long["match_start_s"] <= BARK_AT_S + 1.5, long
    assert long["labels"] and long["available"] is True and 0 < long["score"] <= 1


def test_requests_without_exactly_one_query_or_with_bad_text_are_validation_errors(text_stack: Stack) -> None:
    with httpx.Client(base_url=text_stack.url, timeout=30) as client:
        both = client.post("/v1/searches", files={"file": ("q.wav", wav_bytes(np.zeros(16000)))}, data={"text": "rain"})
        neither = client.post("/v1/searches", data={"k": "3"})
        empty = submit_text_search(client, "   ")
        too_long = submit_text_search(client, "rain " * 30)
        unknown = submit_text_search(client, "rain", filters={"labels": ["Not a sound class"]})
        bad_range = submit_text_search(client, "rain", filters={"min_duration_s": 9, "max_duration_s": 2})
    for answer in (both, neither, empty, too_long, unknown, bad_range):
        assert answer.status_code == 422 and answer.json()["code"] == "validation_error", answer.text
    assert "80" in too_long.json()["message"] and "Not a sound class" in unknown.json()["message"]
    form = httpx.get(f"{text_stack.url}/openapi.json").json()["paths"]["/v1/searches"]["post"]["requestBody"]
    fields = next(iter(form["content"].values()))["schema"]["$ref"].rsplit("/", 1)[-1]
    schema = httpx.get(f"{text_stack.url}/openapi.json").json()["components"]["schemas"][fields]["properties"]
    assert {"file", "text", "k", "labels", "source", "min_duration_s", "max_duration_s"} <= set(schema)


def test_filters_apply_inside_the_search_and_k_results_still_come(text_stack: Stack) -> None:
    with httpx.Client(base_url=text_stack.url, timeout=30) as client:
        plain = text_search_and_wait(client, "a rooster crowing", k=3)
        # Animals: roosters and dogs alike; with the label Dog (by name or id) only dogs, and still k of them.
        animals = text_search_and_wait(client, "animal noises", k=6)
        dogs = text_search_and_wait(client, "animal noises", k=2, filters={"labels": ["Dog"]})
        by_id = text_search_and_wait(client, "animal noises", k=2, filters={"labels": ["/m/0bt9lr"]})
        dog_clips = text_search_and_wait(client, "a dog barking", k=4)
        short = text_search_and_wait(client, "a dog barking", k=3, filters={"max_duration_s": 6})
        youtube = text_search_and_wait(client, "a dog barking", k=5, filters={"source": "youtube"})
        # The same filter on a search by example: a rooster's crow, yet only clips where a dog is heard.
        query = wav_bytes(decode_file(esc10_files("rooster", 1)[0])[: 3 * SAMPLE_RATE])
        answer = submit_search(client, query, "q.wav", 2, "audio/wav", filters={"labels": ["Dog"]})
        audio = wait_for_job(client, answer.headers["Location"], 60)
    assert sum("rooster" in t for t in titles(plain)) >= 2, titles(plain)
    assert any("Dog" not in r["labels"] for r in animals["results"]), animals["results"]  # the filter has work
    for job in (dogs, by_id, audio):
        assert job["status"] == "done" and len(job["results"]) == 2, job
        assert all("Dog" in r["labels"] for r in job["results"]), job["results"]
    assert dogs["filters"]["labels"] == ["Dog"] == by_id["filters"]["labels"]
    assert "long_recording" in titles(dog_clips)  # 15 s long: the duration filter has work
    assert len(short["results"]) == 3 and all("dog_bark" in t for t in titles(short)), titles(short)
    assert youtube["status"] == "done" and youtube["results"] == []


def test_a_deleted_clip_is_no_longer_found_by_description(text_stack: Stack) -> None:
    with httpx.Client(base_url=text_stack.url, timeout=30) as client:
        before = text_search_and_wait(client, "clock ticking", k=1)
        gone = before["results"][0]
        assert client.delete(f"/v1/library/{gone['clip_id']}").status_code == 204
        after = text_search_and_wait(client, "clock ticking", k=12)
    assert gone["clip_id"] not in {r["clip_id"] for r in after["results"]}
    assert after["results"] and all("clock_tick" in t for t in titles(after)), titles(after)  # the others stay


def test_a_library_indexed_before_class_scores_is_reindexed(text_stack: Stack) -> None:
    """Segments as they were written before this change (no class columns): text search is a coded error until
    `echovids reindex-classes` gives them their scores from the stored audio; a second run has nothing to do."""
    text_stack.stop()
    segments = list((text_stack.data_dir / "shards").glob("*/segments/*.npz"))
    assert segments
    for path in segments:
        with np.load(path) as data:
            old = {name: data[name] for name in data.files if name not in ("class_ids", "class_levels", "sha256")}
        np.savez(path.with_suffix(".tmp.npz"), **old)  # type: ignore[arg-type]
        path.with_suffix(".tmp.npz").replace(path)
    text_stack.start()
    with httpx.Client(base_url=text_stack.url, timeout=30) as client:
        refused = text_search_and_wait(client, "rain falling", k=3)
        assert refused["status"] == "failed" and refused["error"]["code"] == "text_search_unavailable", refused
        done = text_stack.cli("reindex-classes", "--wait", "300")
        assert done.returncode == 0, done.stdout + done.stderr
        clips = int(done.stdout.split("queued ")[1].split()[0])
        assert clips >= 4 * PER_CLASS and f"{clips} class scores written" in done.stdout, done.stdout
        again = text_stack.cli("reindex-classes", "--wait", "300")
        assert again.returncode == 0 and f"{clips} had them" in again.stdout, again.stdout + again.stderr
        job = text_search_and_wait(client, "rain falling", k=3)
    assert job["status"] == "done" and all("rain" in t for t in titles(job)), job
