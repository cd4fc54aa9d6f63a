"""Every error the API answers, through a real gateway and real workers: JSON {code, message}, right status."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from echovids.harness import Stack, make_stack, write_wav
from tests.sounds import SR, synthetic_library

MAX_K = 50


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own with an empty library, a small upload limit and a smaller largest k."""
    running = make_stack(
        tmp_path_factory.mktemp("errors") / "data", None, ECHOVIDS_MAX_UPLOAD_MB="1", ECHOVIDS_MAX_K=str(MAX_K)
    )
    running.start()
    yield running
    running.stop()


def post(
    stack: Stack, content: bytes, name: str = "q.wav", media_type: str = "audio/wav", **data: str
) -> httpx.Response:
    return httpx.post(f"{stack.url}/v1/searches", files={"file": (name, content, media_type)}, data=data, timeout=30)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["message"], str) and len(body["message"]) > 10


def wav_bytes(tmp_path: Path, samples: np.ndarray, **kwargs: int) -> bytes:
    return write_wav(tmp_path / "x.wav", samples, **kwargs).read_bytes()


def test_empty_library_is_done_with_no_results(fresh: Stack, tmp_path: Path) -> None:
    query = write_wav(tmp_path / "q.wav", synthetic_library(1)[0][: 3 * SR])
    job = fresh.search(query)
    assert job["status"] == "done"
    assert job["results"] == []


def test_unknown_job_is_404(fresh: Stack) -> None:
    assert_error(httpx.get(f"{fresh.url}/v1/searches/0123456789abcdef"), 404, "not_found")


def test_too_large_is_413(fresh: Stack) -> None:
    assert_error(post(fresh, b"\0" * (1024 * 1024 + 10)), 413, "payload_too_large")


@pytest.mark.parametrize(
    ("content", "name", "media_type"),
    [
        (b"hello, this is text", "notes.txt", "text/plain"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "picture.png", "image/png"),
        (b"%PDF-1.7 " + b"\0" * 100, "doc.bin", "application/octet-stream"),
    ],
)
def test_plainly_not_audio_is_415(fresh: Stack, content: bytes, name: str, media_type: str) -> None:
    assert_error(post(fresh, content, name, media_type), 415, "unsupported_media_type")


@pytest.mark.parametrize("k", ["0", str(MAX_K + 1), "ten"])
def test_k_out_of_range_is_422(fresh: Stack, tmp_path: Path, k: str) -> None:
    content = wav_bytes(tmp_path, np.zeros(SR * 2))
    assert_error(post(fresh, content, k=k), 422, "validation_error")


def test_max_k_is_the_setting_and_config_reports_it(fresh: Stack, tmp_path: Path) -> None:
    assert httpx.get(f"{fresh.url}/v1/config").json()["max_k"] == MAX_K
    content = wav_bytes(tmp_path, np.zeros(SR * 2))
    assert post(fresh, content, k=str(MAX_K)).status_code == 202


def test_missing_file_is_422(fresh: Stack) -> None:
    assert_error(httpx.post(f"{fresh.url}/v1/searches", data={"k": "3"}), 422, "validation_error")


def upload_and_wait(stack: Stack, tmp_path: Path, content: bytes, name: str) -> dict:
    path = tmp_path / name
    path.write_bytes(content)
    return stack.search(path)


@pytest.mark.parametrize(
    "content",
    [b"\x13\x37garbage" * 500, b"RIFF\x24\x08\x00\x00WAVEfmt " + b"\x10" * 20],  # noise bytes; truncated WAV
)
def test_undecodable_audio_fails_the_job_and_the_worker_lives_on(fresh: Stack, tmp_path: Path, content: bytes) -> None:
    job = upload_and_wait(fresh, tmp_path, content, "broken.wav")
    assert job["status"] == "failed"
    assert job["error"]["code"] == "undecodable_audio"
    # The same embedder still serves the next query.
    ok = upload_and_wait(fresh, tmp_path, wav_bytes(tmp_path, synthetic_library(1)[0][: 2 * SR]), "ok.wav")
    assert ok["status"] == "done"


def test_audio_too_short(fresh: Stack, tmp_path: Path) -> None:
    job = upload_and_wait(fresh, tmp_path, wav_bytes(tmp_path, np.zeros(int(0.05 * SR))), "short.wav")
    assert job["status"] == "failed"
    assert job["error"]["code"] == "audio_too_short"


def test_silent_audio_fails_the_job_with_its_own_code(fresh: Stack, tmp_path: Path) -> None:
    quiet = 1e-4 * synthetic_library(1)[0][: 3 * SR]  # -80 dB full scale: a room with nothing in it
    job = upload_and_wait(fresh, tmp_path, wav_bytes(tmp_path, quiet), "quiet.wav")
    assert job["status"] == "failed"
    assert job["error"]["code"] == "silent_audio"
    assert "-60 dB" in job["error"]["message"]


@pytest.mark.parametrize(
    ("rate", "width", "channels"),
    [(8_000, 1, 1), (44_100, 3, 2), (22_050, 2, 6), (96_000, 4, 1), (11_025, 2, 2)],
)
def test_odd_formats_are_searchable(fresh: Stack, tmp_path: Path, rate: int, width: int, channels: int) -> None:
    t = np.arange(int(2.5 * rate)) / rate
    content = wav_bytes(tmp_path, 0.5 * np.sin(2 * np.pi * 440 * t), sr=rate, sample_width=width, channels=channels)
    job = upload_and_wait(fresh, tmp_path, content, "odd.wav")
    assert job["status"] == "done", job


def test_health_ready_docs_metrics(fresh: Stack) -> None:
    assert httpx.get(f"{fresh.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{fresh.url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert "/v1/searches" in httpx.get(f"{fresh.url}/openapi.json").json()["paths"]
    assert httpx.get(f"{fresh.url}/docs").status_code == 200
    assert "http_requests_total" in httpx.get(f"{fresh.url}/metrics/").text


def test_accepted_answer_has_location_and_retry_after(fresh: Stack, tmp_path: Path) -> None:
    answer = post(fresh, wav_bytes(tmp_path, synthetic_library(1)[0][: 2 * SR]))
    assert answer.status_code == 202
    assert answer.headers["Location"] == f"/v1/searches/{answer.json()['id']}"
    assert int(answer.headers["Retry-After"]) >= 1
    assert answer.json()["status"] == "queued"


def test_long_poll_answers_once_the_job_settles(fresh: Stack, tmp_path: Path) -> None:
    query = write_wav(tmp_path / "q.wav", synthetic_library(1)[0][: 3 * SR])
    answer = post(fresh, query.read_bytes())
    assert answer.status_code == 202, answer.text
    # One request, held by the gateway until the search is done: no polling loop.
    job = httpx.get(f"{fresh.url}{answer.headers['Location']}", params={"wait": 30}, timeout=40).json()
    assert job["status"] == "done", job
    assert_error(httpx.get(f"{fresh.url}/v1/searches/0123456789abcdef", params={"wait": 1}), 404, "not_found")
    assert_error(httpx.get(f"{fresh.url}{answer.headers['Location']}", params={"wait": 31}), 422, "validation_error")
