"""Bounded memory for long files (streamed decode, framing in blocks) and micro-batching across callers."""

from __future__ import annotations

import hashlib
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from echovids.audio import decode_bytes_stream, decode_file, decode_stream
from echovids.audio_params import FRAME_HOP_SAMPLES, FRAME_SAMPLES, MIN_AUDIO_SAMPLES
from echovids.errors import AudioTooShort
from echovids.framing import frame_blocks, frame_count, frame_waveform
from echovids.harness import write_wav
from echovids.schemas import EmbeddingSpace
from echovids.settings import get_settings
from services.embedder.base import Embedded
from services.embedder.batching import BatchingModel
from services.embedder.models.yamnet import YamnetTflite
from services.embedder.streaming import embed_stream, embed_waveform
from tests.sounds import write_silent_flac

SR = 16_000


class FakeModel:
    """Cheap stand-in: the first 8 samples of each frame as its 'embedding'; records its calls."""

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.space = EmbeddingSpace(model="fake", version="1", dim=8)
        self.class_names: list[str] = []
        self.calls: list[int] = []
        self.delay_s = delay_s
        self.fail = fail

    def embed(self, frames: np.ndarray) -> Embedded:
        self.calls.append(frames.shape[0])
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("model broke")
        return Embedded(vectors=np.array(frames[:, :8], dtype=np.float32), scores=None)


@pytest.mark.parametrize(
    "n_samples",
    [
        MIN_AUDIO_SAMPLES,
        FRAME_SAMPLES,
        FRAME_SAMPLES + FRAME_HOP_SAMPLES // 2,
        FRAME_SAMPLES + FRAME_HOP_SAMPLES,
        7 * SR + 123,
        31 * SR,
    ],
)
@pytest.mark.parametrize("chunk", [1000, 15_600, 48_000, 10**7])
@pytest.mark.parametrize("block", [1, 3, 256])
def test_frame_blocks_equal_frame_waveform(n_samples: int, chunk: int, block: int) -> None:
    waveform = np.random.default_rng(n_samples).standard_normal(n_samples).astype(np.float32)
    chunks = [waveform[i : i + chunk] for i in range(0, n_samples, chunk)]
    blocks = list(frame_blocks(chunks, block))
    assert all(b.shape[0] <= block for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), frame_waveform(waveform))


def test_frame_blocks_too_short() -> None:
    with pytest.raises(AudioTooShort):
        list(frame_blocks([np.zeros(MIN_AUDIO_SAMPLES - 1, np.float32)]))


def test_decode_stream_equals_decode_file(tmp_path: Path) -> None:
    samples = np.random.default_rng(1).uniform(-0.9, 0.9, 5 * 44_100 + 17)
    path = write_wav(tmp_path / "a.wav", samples, sr=44_100, sample_width=3, channels=2)
    whole = decode_file(path)
    chunks = list(decode_stream(path, chunk_seconds=0.37))
    assert max(c.size for c in chunks) == int(0.37 * SR)
    np.testing.assert_array_equal(np.concatenate(chunks), whole)
    streamed = embed_stream(FakeModel(), decode_bytes_stream(path.read_bytes(), chunk_seconds=1.0))
    assert streamed.n_samples == whole.size
    assert streamed.content_hash == hashlib.sha256(whole.tobytes()).hexdigest()
    np.testing.assert_array_equal(streamed.embedded.vectors, frame_waveform(whole)[:, :8])


def test_two_hour_file_streams_in_flat_memory(tmp_path: Path) -> None:
    path = tmp_path / "2h.flac"
    write_silent_flac(path, seconds=7200)
    tracemalloc.start()
    try:
        streamed = embed_stream(FakeModel(), decode_stream(path, max_seconds=4 * 3600, chunk_seconds=30.0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert streamed.n_samples == 7200 * SR
    assert streamed.embedded.vectors.shape == (frame_count(7200 * SR), 8)
    # The whole waveform would be 460 MB and its frames 900 MB. Streamed: a 30 s chunk (2 MB) and its copies,
    # one block of 256 frames (16 MB) and the 15 000 x 8 result -- the same for a 2 min or a 2 h file.
    assert peak < 48 * 2**20, f"peak {peak / 2**20:.1f} MiB"


def test_embed_waveform_equals_whole_embed_and_threads_agree() -> None:
    waveform = (0.3 * np.random.default_rng(2).standard_normal(20 * SR)).astype(np.float32)
    one = YamnetTflite(get_settings().model_dir, threads=1)
    two = YamnetTflite(get_settings().model_dir, threads=2)
    whole = one.embed(frame_waveform(waveform))
    blocked = embed_waveform(two, waveform, block_frames=7)
    np.testing.assert_array_equal(blocked.vectors, whole.vectors)
    np.testing.assert_array_equal(blocked.scores, whole.scores)  # type: ignore[arg-type]


def test_lone_caller_passes_straight_through() -> None:
    fake = FakeModel()
    batching = BatchingModel(fake, max_frames=4, max_wait_ms=2000)
    frames = np.random.default_rng(3).standard_normal((10, FRAME_SAMPLES)).astype(np.float32)
    started = time.perf_counter()
    result = batching.embed(frames)
    assert time.perf_counter() - started < 1.0  # it did not wait the 2 s for company
    assert fake.calls == [10]  # one caller's frames are never split, whatever max_frames
    np.testing.assert_array_equal(result.vectors, frames[:, :8])
    assert batching.space == fake.space


def test_concurrent_callers_share_model_calls() -> None:
    fake = FakeModel(delay_s=0.02)
    batching = BatchingModel(fake, max_frames=64, max_wait_ms=5)
    rng = np.random.default_rng(4)
    inputs = [rng.standard_normal((int(rng.integers(1, 6)), FRAME_SAMPLES)).astype(np.float32) for _ in range(24)]
    outputs: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        outputs[i] = batching.embed(inputs[i]).vectors

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    for i, frames in enumerate(inputs):
        np.testing.assert_array_equal(outputs[i], frames[:, :8])
    assert sum(fake.calls) == sum(x.shape[0] for x in inputs)
    assert len(fake.calls) < len(inputs) / 2, fake.calls
    assert max(fake.calls) <= 64


def test_a_model_error_reaches_every_caller_of_the_batch() -> None:
    batching = BatchingModel(FakeModel(delay_s=0.01, fail=True), max_frames=64)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            batching.embed(np.zeros((2, FRAME_SAMPLES), np.float32))
        except RuntimeError as error:
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(errors) == 6


def test_stream_errors_reach_the_caller_through_the_read_ahead(tmp_path: Path) -> None:
    from echovids.errors import AudioTooLong, UndecodableAudio

    path = write_wav(tmp_path / "10s.wav", np.zeros(10 * SR))
    with pytest.raises(AudioTooLong):
        embed_stream(FakeModel(), decode_stream(path, max_seconds=4.0, chunk_seconds=1.0))
    with pytest.raises(UndecodableAudio):
        embed_stream(FakeModel(), decode_bytes_stream(b"\x01" * 5000))
    with pytest.raises(AudioTooShort):
        embed_stream(FakeModel(), decode_bytes_stream(write_wav(tmp_path / "s.wav", np.zeros(SR // 2)).read_bytes()))
    with pytest.raises(RuntimeError, match="model broke"):  # a model failure mid-stream stops the decoder too
        embed_stream(FakeModel(fail=True), decode_stream(path, chunk_seconds=1.0), block_frames=2)
