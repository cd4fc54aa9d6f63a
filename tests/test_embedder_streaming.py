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
from echovids.audio_params import FRAME_HOP_SAMPLES, FRAME_SAMPLES, MIN_CLIP_SAMPLES
from echovids.errors import AudioTooShort
from echovids.framing import frame_blocks, frame_count, frame_waveform
from echovids.harness import write_wav
from echovids.schemas import EmbeddingSpace
from echovids.settings import get_settings
from services.embedder.base import Embedded
from services.embedder.batching import BatchingModel
from services.embedder.models.yamnet import YamnetTflite
from services.embedder.streaming import embed_stream, embed_waveform
from tests.sounds import write_noise_ogg, write_silent_flac

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
        MIN_CLIP_SAMPLES,
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
        list(frame_blocks([np.zeros(MIN_CLIP_SAMPLES - 1, np.float32)]))


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
        embed_stream(FakeModel(), decode_bytes_stream(write_wav(tmp_path / "s.wav", np.zeros(SR // 20)).read_bytes()))
    with pytest.raises(RuntimeError, match="model broke"):  # a model failure mid-stream stops the decoder too
        embed_stream(FakeModel(fail=True), decode_stream(path, chunk_seconds=1.0), block_frames=2)


def _clip_peak(data: bytes) -> tuple[int, int]:
    from services.embedder.streaming import embed_clip_stream

    tracemalloc.start()
    try:
        clip = embed_clip_stream(FakeModel(), decode_bytes_stream(data, max_seconds=4 * 3600), silence_dbfs=-60)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return clip.n_samples, peak


def test_a_library_clip_is_decoded_embedded_and_fingerprinted_in_memory_that_does_not_grow(tmp_path: Path) -> None:
    """The clip ingest (embed_clip) streams all of it: 10 minutes cost what 3 minutes do, plus the result.

    Whole, 10 minutes are a 38 MB waveform, 75 MB of frames and a 77 MB spectrogram for the landmarks."""
    short = write_noise_ogg(tmp_path / "3m.ogg", 180).read_bytes()
    long = write_noise_ogg(tmp_path / "10m.ogg", 600).read_bytes()
    n_short, peak_short = _clip_peak(short)
    n_long, peak_long = _clip_peak(long)
    assert n_long > 3 * n_short
    # What grows with the length is only what is kept: 8-dim float16 vectors and ~240 landmarks/s (2 KB/s).
    assert peak_long < peak_short + 4 * 2**20, f"3 min {peak_short / 2**20:.1f} MiB, 10 min {peak_long / 2**20:.1f}"
    assert peak_long < 48 * 2**20, f"peak {peak_long / 2**20:.1f} MiB"


def test_the_streamed_clip_ingest_stores_what_the_whole_waveform_gives() -> None:
    """Frames, vectors (silence muted), per-frame labels and landmarks as from the decoded waveform at once."""
    from echovids import landmarks
    from services.embedder.labels import frame_labels, top_labels
    from services.embedder.silence import mute_silence
    from services.embedder.streaming import embed_clip_stream
    from tests.sounds import synthetic_library

    waveform = np.concatenate([synthetic_library(1, seconds=20.0, seed=4)[0], np.zeros(5 * SR, np.float32)])
    model = YamnetTflite(get_settings().model_dir, threads=1)
    whole = model.embed(frame_waveform(waveform))
    marks = landmarks.extract(waveform)
    chunks = [waveform[i : i + 7_777] for i in range(0, waveform.size, 7_777)]
    clip = embed_clip_stream(model, chunks, silence_dbfs=-60, block_frames=9)
    expected = mute_silence(whole.vectors, waveform, marks.hashes, -60).astype(np.float16)
    np.testing.assert_array_equal(clip.arrays["vectors"], expected)
    assert not clip.arrays["vectors"][-6:].any()  # the silent tail is muted
    np.testing.assert_array_equal(clip.arrays["hashes"], marks.hashes)
    np.testing.assert_array_equal(clip.arrays["times"], marks.times)
    labels = frame_labels(whole.scores, model.class_names)
    np.testing.assert_array_equal(clip.arrays["frame_labels"], labels["frame_labels"])
    np.testing.assert_array_equal(clip.arrays["label_names"], labels["label_names"])
    assert clip.labels == top_labels(whole.scores, model.class_names)
    assert clip.content_hash == hashlib.sha256(waveform.tobytes()).hexdigest() and clip.n_samples == waveform.size


def test_landmarks_streamed_in_blocks_pair_across_the_blocks() -> None:
    """One block or shorter: ``extract`` exactly; longer: the same whatever the chunks, pairs across boundaries."""
    from echovids import landmarks

    rng = np.random.default_rng(6)
    waveform = (rng.standard_normal(40 * SR) * np.linspace(0.05, 0.5, 40 * SR)).astype(np.float32)
    whole = landmarks.extract(waveform)
    one_block = landmarks.extract_stream([waveform[i : i + 3_001] for i in range(0, waveform.size, 3_001)])
    np.testing.assert_array_equal(one_block.hashes, whole.hashes)
    np.testing.assert_array_equal(one_block.times, whole.times)
    blocks = [landmarks.extract_stream(np.array_split(waveform, parts), block_frames=250) for parts in (1, 13, 400)]
    for other in blocks[1:]:
        np.testing.assert_array_equal(other.hashes, blocks[0].hashes)
        np.testing.assert_array_equal(other.times, blocks[0].times)
    # Pairs whose first peak is in one 4 s block and whose second is in the next.
    dt = blocks[0].hashes & 0x3F
    crossing = (blocks[0].times // 250) != ((blocks[0].times + dt) // 250)
    assert crossing.sum() > 100
    shared = set(zip(blocks[0].hashes.tolist(), blocks[0].times.tolist(), strict=True))
    assert len(shared & set(zip(whole.hashes.tolist(), whole.times.tolist(), strict=True))) > 0.9 * len(whole)


class ScoringFakeModel(FakeModel):
    """FakeModel with four 'classes' scored from each frame's first samples, as YAMNet's scores come."""

    def __init__(self) -> None:
        super().__init__()
        self.class_names = ["a", "b", "c", "d"]

    def embed(self, frames: np.ndarray) -> Embedded:
        vectors = super().embed(frames).vectors
        return Embedded(vectors=vectors, scores=1 / (1 + np.exp(-vectors[:, :4])))


def test_a_stored_file_streams_as_it_decodes_whole(tmp_path: Path) -> None:
    """A 16 kHz WAV is mapped and converted in-process a chunk at a time; anything else streams through ffmpeg."""
    from echovids.audio import decode_file_stream

    samples = np.random.default_rng(5).uniform(-0.9, 0.9, 7 * SR + 3)
    for path in (
        write_wav(tmp_path / "16k.wav", samples),
        write_wav(tmp_path / "44k.wav", samples, sr=44_100, channels=2),
    ):
        chunks = list(decode_file_stream(path, chunk_seconds=0.5))
        assert max(c.size for c in chunks) <= SR // 2
        np.testing.assert_array_equal(np.concatenate(chunks), decode_file(path))


def test_the_class_reindex_streams_what_the_ingest_stores(tmp_path: Path) -> None:
    """``embed_classes_stream`` (the re-index of a stored clip) gives the class columns the ingest gives, and a
    20-minute stored file costs what a 2-minute one does (whole, 20 minutes are a 77 MB waveform)."""
    from echovids.audio import decode_file_stream
    from services.embedder.streaming import embed_classes_stream, embed_clip_stream

    model = ScoringFakeModel()
    noise = np.random.default_rng(6).uniform(-0.5, 0.5, 40 * SR)
    path = write_wav(tmp_path / "40s.wav", noise)
    ingest = embed_clip_stream(model, decode_file_stream(path), silence_dbfs=-60, block_frames=7)
    classes, frames = embed_classes_stream(model, decode_file_stream(path), block_frames=7)
    assert frames == ingest.n_frames
    assert set(classes) == {"frame_labels", "label_names", "class_ids", "class_levels"}
    for name, column in classes.items():
        np.testing.assert_array_equal(column, ingest.arrays[name])

    peaks = []
    for minutes in (2, 20):
        long = write_wav(tmp_path / f"{minutes}m.wav", np.resize(noise, minutes * 60 * SR))
        tracemalloc.start()
        try:
            _, n = embed_classes_stream(model, decode_file_stream(long, max_seconds=4 * 3600))
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert n == frame_count(minutes * 60 * SR)
    assert peaks[1] < peaks[0] + 4 * 2**20, f"2 min {peaks[0] / 2**20:.1f} MiB, 20 min {peaks[1] / 2**20:.1f}"
    assert peaks[1] < 48 * 2**20, f"peak {peaks[1] / 2**20:.1f} MiB"
