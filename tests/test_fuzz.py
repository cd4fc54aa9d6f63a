"""Fuzzing the upload endpoints of a real gateway process over a real Redis, bounded in time: whatever the
multipart body, headers or WAV header, the answer is a 202 or a JSON error with a code, never a 500, and the
gateway stays up."""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Iterator

import h11
import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import EXTERNAL_REDIS, external_redis, external_redis_available
from tests.gateway_proc import gateway

REDIS_URL = external_redis(5)  # this module's own database (see conftest)
KEY = "fuzz-key"
BUDGET_S = 45.0

pytestmark = pytest.mark.skipif(not external_redis_available(), reason=f"no Redis at {EXTERNAL_REDIS}")


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    redis.Redis.from_url(REDIS_URL).flushdb()
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    limits = {"ECHOVIDS_RATE_LIMIT_SEARCHES_PER_S": "0", "ECHOVIDS_RATE_LIMIT_WRITES_PER_S": "0"}
    with gateway(data_dir, REDIS_URL, ECHOVIDS_API_KEY=KEY, ECHOVIDS_MAX_UPLOAD_MB="1", **limits) as running:
        yield running
    redis.Redis.from_url(REDIS_URL).flushdb()


def wav(rate: int, bits: int, channels: int, fmt_tag: int, data: bytes, claimed: int | None) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits)
    size = len(data) if claimed is None else claimed
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", (len(body)) & 0xFFFFFFFF) + body


u32 = st.integers(0, 0xFFFFFFFF)
wavs = st.builds(
    wav,
    rate=st.one_of(st.sampled_from([0, 1, 8000, 16000, 44100, 0xFFFFFFFF]), u32),
    bits=st.sampled_from([0, 1, 4, 8, 12, 16, 24, 32, 64, 0xFFFF]),
    channels=st.sampled_from([0, 1, 2, 7, 0xFFFF]),
    fmt_tag=st.sampled_from([1, 3, 0xFFFE, 0, 85]),
    data=st.binary(max_size=4096),
    claimed=st.one_of(st.none(), u32),
)
contents = st.one_of(wavs, st.binary(max_size=2048))
media_types = st.sampled_from(["audio/wav", "application/octet-stream", "text/plain", "", "audio/x-\x7f", "video/a"])
texts = st.text(max_size=300)
fields = st.dictionaries(st.sampled_from(["k", "title", "labels", "x", "file"]), texts, max_size=4)
headers = st.dictionaries(
    st.sampled_from(["Authorization", "Content-Type", "Content-Length", "Origin", "Transfer-Encoding"]),
    st.one_of(st.just(f"Bearer {KEY}"), st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)),
    max_size=3,
)


def check(answer: httpx.Response) -> None:
    assert answer.status_code < 500 or answer.status_code == 503, (answer.status_code, answer.text[:300])
    if answer.status_code != 202:
        body = answer.json()
        assert isinstance(body.get("code"), str) and body["code"], answer.text[:300]


def test_fuzzed_uploads_get_a_202_or_a_coded_error(url: str) -> None:
    started = time.monotonic()
    client = httpx.Client(base_url=url, timeout=30)

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        path=st.sampled_from(["/v1/searches", "/v1/library"]),
        files=st.lists(
            st.tuples(st.sampled_from(["file", "upload"]), st.text(max_size=80), contents, media_types), max_size=3
        ),
        data=fields,
        extra=headers,
        raw=st.one_of(st.none(), st.binary(max_size=2048)),
        keyed=st.booleans(),
    )
    def one(path: str, files: list, data: dict, extra: dict, raw: bytes | None, keyed: bool) -> None:
        if time.monotonic() - started > BUDGET_S:
            return  # the time bound: the rest of the examples are skipped
        sent = {"Authorization": f"Bearer {KEY}"} if keyed else {}
        if raw is not None:  # a body that is not multipart at all, under whatever headers were drawn
            # Headers httpx itself refuses to send, or a connection closed after a refusal, are no answer to check.
            # (A body longer than a drawn Content-Length is refused by h11 under httpx, unwrapped.)
            refused = (httpx.LocalProtocolError, h11.LocalProtocolError, httpx.RemoteProtocolError, UnicodeEncodeError)
            with contextlib.suppress(*refused):
                check(client.post(path, content=raw, headers={**sent, **extra}))
            return
        parts = [(name, (fname, body, mt)) for name, fname, body, mt in files]
        with contextlib.suppress(UnicodeEncodeError):  # a file name httpx cannot encode
            check(client.post(path, files=parts or None, data=data, headers=sent))

    one()
    client.close()
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    assert time.monotonic() - started < BUDGET_S + 30
