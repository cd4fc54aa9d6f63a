"""Abuse at the door: oversized, keyless, slow and too frequent requests are refused from their headers (or as
their body streams), by real gateway processes over a real Redis; no worker is needed to refuse anything."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from echovids.harness import accepted, submit_search, wav_bytes
from tests.conftest import EXTERNAL_REDIS, external_redis, external_redis_available
from tests.gateway_proc import gateway, raw_request, read_response

REDIS_URL = external_redis(7)  # this module's own database (see conftest)
KEY = "abuse-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY_TIMEOUT_S = 2.0
SETTINGS = {
    "ECHOVIDS_API_KEY": KEY,
    "ECHOVIDS_MAX_UPLOAD_MB": "1",
    "ECHOVIDS_MAX_REQUEST_MB": "2",
    "ECHOVIDS_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    "ECHOVIDS_RATE_LIMIT_SEARCHES_PER_S": "0.2",
    "ECHOVIDS_RATE_LIMIT_SEARCHES_BURST": "3",
    "ECHOVIDS_MAX_LABELS": "8",
    "ECHOVIDS_MAX_LABEL_LENGTH": "40",
    "ECHOVIDS_MAX_TITLE_LENGTH": "100",
}

pytestmark = pytest.mark.skipif(not external_redis_available(), reason=f"no Redis at {EXTERNAL_REDIS}")


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Two gateway processes on one Redis (the rate limit is shared); the first allows one other origin."""
    redis.Redis.from_url(REDIS_URL).flushdb()
    data_dir = tmp_path_factory.mktemp("abuse") / "data"
    with (
        gateway(data_dir, REDIS_URL, ECHOVIDS_CORS_ORIGINS="https://ok.example", **SETTINGS) as first,
        gateway(data_dir, REDIS_URL, **SETTINGS) as second,
    ):
        yield first, second
    redis.Redis.from_url(REDIS_URL).flushdb()


@pytest.fixture
def url(gateways: tuple[str, str]) -> str:
    for key in redis.Redis.from_url(REDIS_URL).scan_iter("echovids:ratelimit:*"):
        redis.Redis.from_url(REDIS_URL).delete(key)
    return gateways[0]


def _error(status: int, body: bytes) -> str:
    parsed = json.loads(body)
    assert isinstance(parsed["message"], str) and parsed["message"]
    return f"{status} {parsed['code']}"


def multipart_head(path: str, length: int, extra: str = "") -> str:
    return (
        f"POST {path} HTTP/1.1\nHost: gateway\nContent-Type: multipart/form-data; boundary=xyz\n"
        f"Content-Length: {length}\n{extra}"
    )


def test_a_declared_10_gb_upload_is_refused_at_once(url: str) -> None:
    started = time.monotonic()
    status, headers, body = raw_request(url, multipart_head("/v1/searches", 10 * 2**30), b"--xyz\r\n")
    assert _error(status, body) == "413 payload_too_large"
    assert time.monotonic() - started < 2 and headers.get("connection") == "close"
    status, _, body = raw_request(url, multipart_head("/v1/library", 10 * 2**30, f"Authorization: Bearer {KEY}\n"))
    assert _error(status, body) == "413 payload_too_large"


def test_a_chunked_body_is_refused_once_it_passes_the_limit(url: str) -> None:
    """No Content-Length to judge by: the refusal comes as the body streams, long before 50 MB are sent."""
    host, port = url.removeprefix("http://").split(":")
    chunk = b"\0" * 65536
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = "POST /v1/searches HTTP/1.1\nHost: gateway\nContent-Type: multipart/form-data; boundary=xyz\n"
        sock.sendall((head + "Transfer-Encoding: chunked\n\n").replace("\n", "\r\n").encode())
        part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        sock.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
        sock.settimeout(0.05)
        try:
            while sent < 50 * 2**20:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        break  # the answer has begun
                except TimeoutError:
                    pass
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(10)
        status, _, body = read_response(sock)
    assert _error(status, body) == "413 payload_too_large"
    assert sent < 8 * 2**20, f"{sent} bytes were taken in before the refusal"


def test_library_writes_without_the_key_are_refused_before_the_body(url: str) -> None:
    status, headers, body = raw_request(url, multipart_head("/v1/library", 100 * 2**20))
    assert _error(status, body) == "401 unauthorized" and headers.get("www-authenticate") == "Bearer"
    status, _, body = raw_request(url, multipart_head("/v1/library", 100 * 2**20, "Authorization: Bearer nope\n"))
    assert _error(status, body) == "403 forbidden"
    status, _, body = raw_request(url, "DELETE /v1/library/x HTTP/1.1\nHost: gateway\n")
    assert _error(status, body) == "401 unauthorized"


def test_a_body_that_trickles_is_cut_off_with_408(url: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall((multipart_head("/v1/searches", 100_000) + "\n").replace("\n", "\r\n").encode())
        sock.sendall(b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n')
        sock.settimeout(0.5)
        answer = b""
        while not answer and time.monotonic() - started < BODY_TIMEOUT_S + 5:
            try:
                sock.sendall(bytes(10))
                answer = sock.recv(1, socket.MSG_PEEK)
            except TimeoutError:
                continue
        sock.settimeout(10)
        status, _, body = read_response(sock)
    assert _error(status, body) == "408 request_timeout"
    assert BODY_TIMEOUT_S - 0.5 < time.monotonic() - started < BODY_TIMEOUT_S + 1.5


def test_searches_are_rate_limited_per_client_across_gateway_processes(gateways: tuple[str, str], url: str) -> None:
    wav = wav_bytes(0.3 * np.sin(np.arange(32_000) / 7.0))
    answers = [
        httpx.post(f"{gateways[i % 2]}/v1/searches", files={"file": ("q.wav", wav, "audio/wav")}, timeout=30)
        for i in range(4)
    ]
    assert [a.status_code for a in answers[:3]] == [202, 202, 202], answers[2].text
    refused = answers[3]
    assert _error(refused.status_code, refused.content) == "429 rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 5
    # Reads are never limited: polling the accepted jobs goes on.
    assert httpx.get(f"{gateways[1]}{answers[0].headers['Location']}").status_code == 200
    # A polite client (the harness, the CLI) waits as told and is let in.
    with httpx.Client(base_url=gateways[0], timeout=30) as client:
        started = time.monotonic()
        assert accepted(lambda: submit_search(client, wav, "q.wav"), timeout_s=15).status_code == 202
        assert time.monotonic() - started >= 1.0


def test_labels_and_titles_have_limits(url: str) -> None:
    wav = wav_bytes(0.3 * np.sin(np.arange(32_000) / 5.0))

    def add(**data: str | list[str]) -> httpx.Response:
        files = {"file": ("a.wav", wav, "audio/wav")}
        return httpx.post(f"{url}/v1/library", files=files, data=data, headers=AUTH, timeout=30)

    for data in ({"labels": ",".join(f"l{i}" for i in range(9))}, {"labels": "x" * 41}, {"title": "t" * 101}):
        answer = add(**data)
        assert _error(answer.status_code, answer.content) == "422 validation_error", data
    assert add(labels="dog,bark", title="a dog").status_code == 202


def test_cors_only_for_configured_origins(gateways: tuple[str, str], url: str) -> None:
    preflight = {"Access-Control-Request-Method": "POST"}
    allowed = httpx.options(f"{url}/v1/searches", headers={"Origin": "https://ok.example", **preflight})
    assert allowed.headers.get("access-control-allow-origin") == "https://ok.example"
    other = httpx.options(f"{url}/v1/searches", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers
    unconfigured = httpx.options(f"{gateways[1]}/v1/searches", headers={"Origin": "https://ok.example", **preflight})
    assert "access-control-allow-origin" not in unconfigured.headers
    # A form post from another site's page (no preflight for multipart) is refused, the gateway's own page is not.
    wav = wav_bytes(0.3 * np.sin(np.arange(32_000) / 3.0))
    files = {"file": ("q.wav", wav, "audio/wav")}
    foreign = httpx.post(f"{gateways[1]}/v1/searches", files=files, headers={"Origin": "https://evil.example"})
    assert _error(foreign.status_code, foreign.content) == "403 forbidden"
    own = httpx.post(f"{gateways[1]}/v1/searches", files=files, headers={"Origin": gateways[1]})
    assert own.status_code == 202, own.text


def test_the_ingest_command_holds_labels_to_the_same_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`echovids ingest --labels` refuses what POST /v1/library refuses, before any file is sent."""
    from typer.testing import CliRunner

    from echovids.cli import app
    from echovids.settings import get_settings

    (tmp_path / "a.wav").write_bytes(wav_bytes(0.3 * np.sin(np.arange(16_000) / 5.0)))
    monkeypatch.setenv("ECHOVIDS_MAX_LABEL_LENGTH", "40")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["ingest", str(tmp_path), "--labels", "x" * 41])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert "at most 40 characters" in result.output
