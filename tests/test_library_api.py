"""/v1/library in-process: the contract (202 + jobs, paging, filters, 404, 204) and the API key, on SQLite and
PostgreSQL. Tasks are sent to the test Redis but no worker runs here; tests/test_library_stack.py runs them."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from echovids.harness import write_wav
from tests.conftest import EXTERNAL_REDIS, external_redis, external_redis_available
from tests.test_library_catalog import database  # noqa: F401  (fixture: SQLite and PostgreSQL)

REDIS_URL = external_redis(13)  # this module's own database (see conftest)

pytestmark = pytest.mark.skipif(not external_redis_available(), reason=f"no Redis at {EXTERNAL_REDIS}")


def wav_bytes(tmp_path: Path, seed: int, seconds: float = 2.0) -> bytes:
    rng = np.random.default_rng(seed)
    return write_wav(tmp_path / f"s{seed}.wav", 0.3 * rng.standard_normal(int(16000 * seconds))).read_bytes()


@pytest.fixture
def client(database: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:  # noqa: F811
    from echovids.settings import get_settings

    monkeypatch.setenv("ECHOVIDS_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("ECHOVIDS_API_KEY", "s3cret")
    get_settings.cache_clear()
    from services.gateway.app import create_app

    with TestClient(create_app()) as c:
        yield c
    redis.Redis.from_url(REDIS_URL).flushdb()
    get_settings.cache_clear()


AUTH = {"Authorization": "Bearer s3cret"}


def post(client: TestClient, files: list[tuple[str, bytes]], headers: dict[str, str] | None = None, **data: str):  # type: ignore[no-untyped-def]
    parts = [("file", (name, io.BytesIO(body), "audio/wav")) for name, body in files]
    return client.post("/v1/library", files=parts, data=data, headers=headers or {})


def test_writes_need_the_key_reads_do_not(client: TestClient, tmp_path: Path) -> None:
    body = [("a.wav", wav_bytes(tmp_path, 1))]
    missing = post(client, body)
    assert missing.status_code == 401 and missing.json()["code"] == "unauthorized"
    wrong = post(client, body, {"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and wrong.json()["code"] == "forbidden"
    basic = post(client, body, {"Authorization": "Basic czNjcmV0"})
    assert basic.status_code == 401
    assert client.delete("/v1/library/x").status_code == 401
    assert client.delete("/v1/library/x", headers={"Authorization": "Bearer nope"}).status_code == 403
    assert client.get("/v1/library").status_code == 200
    assert client.get("/v1/library").json()["total"] == 0  # nothing was added by the refused writes


def test_post_queues_a_job_per_file_and_lists_them(client: TestClient, tmp_path: Path) -> None:
    answer = post(
        client,
        [("dog bark.wav", wav_bytes(tmp_path, 1)), ("rain.wav", wav_bytes(tmp_path, 2))],
        AUTH,
        labels="Dog, Animal",
    )
    assert answer.status_code == 202, answer.text
    jobs = answer.json()
    assert len(jobs) == 2 and all(j["kind"] == "ingest" and j["status"] == "queued" for j in jobs)
    assert answer.headers["Location"] == f"/v1/library/{jobs[0]['clip_id']}"
    listing = client.get("/v1/library").json()
    assert listing["total"] == 2 and listing["page"] == 1 and listing["page_size"] == 50
    by_title = {i["title"]: i for i in listing["items"]}
    item = by_title["dog bark"]
    assert item["labels"] == ["Dog", "Animal"] and item["status"] == "pending"
    assert item["label_ids"] == ["/m/0bt9lr", "/m/0jbk"]  # the AudioSet ontology's ids of those names
    assert item["source"] == {
        "kind": "file",
        "file_name": "dog bark.wav",
        "youtube_id": None,
        "start_s": None,
        "end_s": None,
        "url": None,
    }
    assert set(item) >= {"clip_id", "title", "labels", "duration_s", "source", "status", "space", "created_at"}
    one = client.get(f"/v1/library/{jobs[0]['clip_id']}")
    assert one.status_code == 200 and one.json()["title"] == "dog bark"
    assert one.json()["job_id"] == jobs[0]["id"]


def test_title_applies_to_a_single_file(client: TestClient, tmp_path: Path) -> None:
    answer = post(client, [("x.wav", wav_bytes(tmp_path, 3))], AUTH, title="Door slam, take 2")
    clip = client.get(f"/v1/library/{answer.json()[0]['clip_id']}").json()
    assert clip["title"] == "Door slam, take 2" and clip["source"]["file_name"] == "x.wav"


def test_the_same_bytes_twice_are_one_clip(client: TestClient, tmp_path: Path) -> None:
    data = wav_bytes(tmp_path, 4)
    first = post(client, [("a.wav", data)], AUTH).json()[0]
    again = post(client, [("copy.wav", data)], AUTH).json()[0]
    # Still pending: the same live job comes back, and no second clip is made.
    assert again["id"] == first["id"] and again["clip_id"] == first["clip_id"]
    assert client.get("/v1/library").json()["total"] == 1


def test_a_bad_file_refuses_the_whole_request(client: TestClient, tmp_path: Path) -> None:
    answer = client.post(
        "/v1/library",
        headers=AUTH,
        files=[
            ("file", ("a.wav", io.BytesIO(wav_bytes(tmp_path, 5)), "audio/wav")),
            ("file", ("b.png", io.BytesIO(b"\x89PNG\r\n\x1a\n" + b"0" * 100), "image/png")),
        ],
    )
    assert answer.status_code == 415 and answer.json()["code"] == "unsupported_media_type"
    assert client.get("/v1/library").json()["total"] == 0
    assert client.post("/v1/library", headers=AUTH).status_code == 422


def add_rows(rows: list[dict]) -> None:
    from datetime import UTC, datetime, timedelta

    from echovids import catalog

    base = datetime(2026, 1, 1, tzinfo=UTC)
    with catalog.session() as s:
        for i, row in enumerate(rows):
            s.add(
                catalog.Clip(shard=0, status="ready", source_kind="file", created_at=base + timedelta(minutes=i), **row)
            )


def test_paging_and_filters(client: TestClient) -> None:
    add_rows(
        [
            {
                "id": f"c{i:02d}",
                "title": f"Clip {i}",
                "file_name": f"f{i}.wav",
                "labels": ["Dog"] if i % 3 == 0 else ["Rain", "Dog barking 100%"],
            }
            for i in range(25)
        ]
    )
    page = client.get("/v1/library", params={"page": 2, "page_size": 10}).json()
    assert page["total"] == 25 and [i["clip_id"] for i in page["items"]] == [f"c{i:02d}" for i in range(14, 4, -1)]
    assert client.get("/v1/library", params={"page": 3, "page_size": 10}).json()["items"][-1]["clip_id"] == "c00"
    dogs = client.get("/v1/library", params={"label": "Dog", "page_size": 200}).json()
    assert dogs["total"] == 9  # exact label: "Dog barking 100%" is not "Dog"
    # An AudioSet id finds the clips labelled with its name.
    assert client.get("/v1/library", params={"label": "/m/0bt9lr"}).json()["total"] == 9
    assert client.get("/v1/library", params={"label": "Dog barking 100%"}).json()["total"] == 16
    assert client.get("/v1/library", params={"q": "clip 1"}).json()["total"] == 11  # 1, 10..19
    assert client.get("/v1/library", params={"q": "F7.WAV"}).json()["total"] == 1
    assert client.get("/v1/library", params={"q": "%"}).json()["total"] == 0
    assert client.get("/v1/library", params={"page_size": 500}).status_code == 422
    assert client.get("/v1/library", params={"status": "pending"}).json()["total"] == 0


def test_get_and_delete(client: TestClient) -> None:
    add_rows([{"id": "gone", "title": "t", "labels": []}, {"id": "kept", "title": "t", "labels": []}])
    missing = client.get("/v1/library/nope")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert client.delete("/v1/library/nope", headers=AUTH).status_code == 404
    deleted = client.delete("/v1/library/gone", headers=AUTH)
    assert deleted.status_code == 204 and deleted.content == b""
    assert client.get("/v1/library/gone").status_code == 404
    assert [i["clip_id"] for i in client.get("/v1/library").json()["items"]] == ["kept"]
    # The tombstone went to the clip's shard queue, by task name.
    queued = redis.Redis.from_url(REDIS_URL).lrange("search.shard.0", 0, -1)
    bodies = [json.loads(m) for m in queued]
    assert any(b["headers"]["task"] == "echovids.search.delete_clip" for b in bodies)


def test_no_key_configured_means_open_writes(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from echovids.settings import get_settings

    monkeypatch.delenv("ECHOVIDS_API_KEY")
    get_settings.cache_clear()
    assert post(client, [("a.wav", wav_bytes(tmp_path, 9))]).status_code == 202


def set_row(clip_id: str, **values: object) -> None:
    from echovids import catalog

    with catalog.session() as s:
        row = s.get(catalog.Clip, clip_id)
        assert row is not None
        for key, value in values.items():
            setattr(row, key, value)


def test_upkeep_settles_clips_stuck_pending(client: TestClient, tmp_path: Path) -> None:
    from echovids import catalog, clip_audio, queues
    from echovids.errors import UndecodableAudio
    from echovids.jobs import JobStore, _job_key
    from echovids.library import Reconciled, reconcile_pending

    store = JobStore()
    jobs = post(client, [(f"{n}.wav", wav_bytes(tmp_path, 40 + i)) for i, n in enumerate("abcde")], AUTH).json()
    queued, failing, vanished, lost, dropped = (j["clip_id"] for j in jobs)
    store.fail(jobs[1]["id"], UndecodableAudio("The file could not be decoded as audio (bad header)."))
    for job in (jobs[2], jobs[3]):
        store.redis.delete(_job_key(job["id"]))  # the job record expired
    clip_audio.delete(lost)  # and this one's stored audio is gone too
    # The last one's job record says queued, but its task message is gone (lost with a Redis crash).
    (message,) = [m for m in store.redis.lrange(queues.EMBED, 0, -1) if jobs[4]["id"].encode() in m]
    store.redis.lrem(queues.EMBED, 1, message)

    assert reconcile_pending(store, older_than_s=3600) == Reconciled([], [])  # all too young to be looked at
    settled = reconcile_pending(store, older_than_s=0)
    assert sorted(settled.failed) == sorted([failing, lost]) and sorted(settled.resubmitted) == sorted(
        [vanished, dropped]
    )
    rows = catalog.get_clips([queued, failing, vanished, lost, dropped])
    assert {k: r.status for k, r in rows.items()} == {
        queued: "pending",  # its job is still queued: left alone
        failing: "failed",
        vanished: "pending",  # sent again, under a new job
        lost: "failed",
        dropped: "pending",  # sent again too
    }
    assert rows[lost].error_code == "not_found" and "add the file again" in str(rows[lost].error_message)
    for clip_id, job in ((vanished, jobs[2]), (dropped, jobs[4])):
        assert rows[clip_id].job_id not in (None, job["id"]) and store.get(rows[clip_id].job_id).status == "queued"
    assert rows[queued].job_id == jobs[0]["id"]

    # Once only: the same clip stuck again is marked failed rather than sent round forever.
    store.redis.delete(_job_key(str(rows[vanished].job_id)))
    assert reconcile_pending(store, older_than_s=0).failed == [vanished]


def test_deleting_a_clip_indexes_its_earliest_duplicate_instead(client: TestClient, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from echovids import catalog

    jobs = post(client, [(f"{n}.wav", wav_bytes(tmp_path, 50 + i)) for i, n in enumerate("oxy")], AUTH).json()
    original, first, second = (j["clip_id"] for j in jobs)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    set_row(original, status="ready", created_at=t0)
    set_row(first, status="duplicate", duplicate_of=original, created_at=t0 + timedelta(minutes=1))
    set_row(second, status="duplicate", duplicate_of=original, created_at=t0 + timedelta(minutes=2))

    assert client.delete(f"/v1/library/{original}", headers=AUTH).status_code == 204
    rows = catalog.get_clips([original, first, second])
    assert original not in rows
    assert (rows[first].status, rows[first].duplicate_of) == ("pending", None)  # being indexed in its place
    assert rows[first].job_id not in (None, jobs[1]["id"])
    assert (rows[second].status, rows[second].duplicate_of) == ("duplicate", first)
