"""Bad input into the embedder: each case embeds correctly or fails with a coded error.

In process, as the embedder task does it: decode (echovids.audio) -> frames (echovids.framing) -> model.embed.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from echovids.audio import decode_bytes, decode_bytes_stream, decode_file, decode_stream
from echovids.errors import AudioTooLong, AudioTooShort, EchovidsError, UndecodableAudio
from echovids.framing import frame_count, frame_waveform
from echovids.harness import write_wav
from echovids.settings import Settings, get_settings
from services.embedder.base import Embedded
from services.embedder.models.yamnet import YamnetTflite
from tests.sounds import write_silent_flac

SR = 16_000


@pytest.fixture(scope="module")
def model() -> YamnetTflite:
    return YamnetTflite(get_settings().model_dir, threads=2)


def tone(seconds: float, sr: int = SR, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return amplitude * np.sin(2 * np.pi * freq * t)


def embed_bytes(model: YamnetTflite, data: bytes, max_seconds: float | None = 60.0) -> tuple[np.ndarray, Embedded]:
    waveform = decode_bytes(data, max_seconds=max_seconds)
    return waveform, model.embed(frame_waveform(waveform))


def assert_sane(waveform: np.ndarray, embedded: Embedded, seconds: float) -> None:
    assert waveform.dtype == np.float32
    assert np.isfinite(waveform).all() and np.abs(waveform).max() <= 1.0
    assert abs(waveform.size - seconds * SR) <= SR // 100
    assert embedded.vectors.shape == (frame_count(waveform.size), 1024)
    assert np.isfinite(embedded.vectors).all()
    np.testing.assert_allclose(np.linalg.norm(embedded.vectors, axis=1), 1.0, atol=1e-4)
    assert embedded.scores is not None and np.isfinite(embedded.scores).all()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.sum(a * b, axis=1)))


def write_float_wav(path: Path, samples: np.ndarray, sr: int = SR) -> Path:
    """IEEE-float WAV (format 3), which may carry NaN, inf and values past full scale."""
    data = np.asarray(samples, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, sr, sr * 4, 4, 32)
    fact = struct.pack("<I", len(data) // 4)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<I", 4) + fact
    body += b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def test_silence_embeds(model: YamnetTflite, tmp_path: Path) -> None:
    waveform, embedded = embed_bytes(model, write_wav(tmp_path / "s.wav", np.zeros(3 * SR)).read_bytes())
    assert_sane(waveform, embedded, 3.0)
    assert not waveform.any()
    assert model.class_names[int(embedded.scores.mean(axis=0).argmax())] == "Silence"  # type: ignore[union-attr]


def test_clipping_embeds_and_still_sounds_like_the_tone(model: YamnetTflite, tmp_path: Path) -> None:
    clean = embed_bytes(model, write_wav(tmp_path / "c.wav", tone(3.0)).read_bytes())[1]
    # 10x over full scale: write_wav clips it to a square-ish wave, as a clipping recorder would.
    waveform, clipped = embed_bytes(model, write_wav(tmp_path / "x.wav", tone(3.0, amplitude=5.0)).read_bytes())
    assert_sane(waveform, clipped, 3.0)
    assert np.mean(np.abs(waveform) > 0.99) > 0.8
    assert np.isfinite(cosine(clean.vectors, clipped.vectors))


def test_dc_offset_barely_moves_the_embedding(model: YamnetTflite, tmp_path: Path) -> None:
    clean = embed_bytes(model, write_wav(tmp_path / "c.wav", tone(3.0, amplitude=0.3)).read_bytes())[1]
    path = write_wav(tmp_path / "d.wav", 0.5 + tone(3.0, amplitude=0.3))
    waveform, shifted = embed_bytes(model, path.read_bytes())
    assert_sane(waveform, shifted, 3.0)
    assert waveform.mean() == pytest.approx(0.5, abs=0.01)
    # The mel bands start at 125 Hz, so a constant offset barely shows (window sidelobes only): 0.94 measured.
    assert cosine(clean.vectors, shifted.vectors) > 0.9
    top = int(clean.scores.mean(axis=0).argmax())  # type: ignore[union-attr]
    assert int(shifted.scores.mean(axis=0).argmax()) == top  # type: ignore[union-attr]


def test_nan_inf_and_overs_in_a_float_wav(model: YamnetTflite, tmp_path: Path) -> None:
    samples = tone(3.0).astype(np.float32)
    samples[100:200] = np.nan
    samples[1000] = np.inf
    samples[1001] = -np.inf
    samples[2000:2100] = 3.0
    waveform, embedded = embed_bytes(model, write_float_wav(tmp_path / "f.wav", samples).read_bytes())
    assert_sane(waveform, embedded, 3.0)
    assert not waveform[100:200].any()
    assert waveform[1000] == 1.0 and waveform[1001] == -1.0
    assert (waveform[2000:2100] == 1.0).all()


@pytest.mark.parametrize(("rate", "width"), [(8_000, 2), (96_000, 3)])
def test_other_sample_rates_are_resampled(model: YamnetTflite, tmp_path: Path, rate: int, width: int) -> None:
    reference = embed_bytes(model, write_wav(tmp_path / "r.wav", tone(3.0, freq=1000.0)).read_bytes())[1]
    path = write_wav(tmp_path / f"{rate}.wav", tone(3.0, sr=rate, freq=1000.0), sr=rate, sample_width=width)
    waveform, embedded = embed_bytes(model, path.read_bytes())
    assert_sane(waveform, embedded, 3.0)
    spectrum = np.abs(np.fft.rfft(waveform))
    assert np.fft.rfftfreq(waveform.size, 1 / SR)[spectrum.argmax()] == pytest.approx(1000.0, abs=2.0)
    assert cosine(reference.vectors, embedded.vectors) > 0.95


def test_six_channels_mix_to_mono(model: YamnetTflite, tmp_path: Path) -> None:
    path = write_wav(tmp_path / "6.wav", tone(3.0, freq=700.0), channels=6)
    waveform, embedded = embed_bytes(model, path.read_bytes())
    assert_sane(waveform, embedded, 3.0)
    spectrum = np.abs(np.fft.rfft(waveform))
    assert np.fft.rfftfreq(waveform.size, 1 / SR)[spectrum.argmax()] == pytest.approx(700.0, abs=2.0)


def test_a_twentieth_of_a_second_is_too_short(tmp_path: Path) -> None:
    data = write_wav(tmp_path / "short.wav", tone(0.05)).read_bytes()
    waveform = decode_bytes(data, max_seconds=60.0)
    with pytest.raises(AudioTooShort) as caught:
        frame_waveform(waveform)
    assert caught.value.code == "audio_too_short" and "0.05 s" in caught.value.message


@pytest.fixture(scope="module")
def two_hours(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Two hours of 8 kHz silence as FLAC: 0.7 MB, made by ffmpeg in a few seconds."""
    path = tmp_path_factory.mktemp("long") / "2h.flac"
    write_silent_flac(path, seconds=7200)
    return path.read_bytes()


def test_two_hours_is_too_long_for_a_query(two_hours: bytes) -> None:
    limit = Settings().max_query_s
    with pytest.raises(AudioTooLong) as caught:
        decode_bytes(two_hours, max_seconds=limit)
    assert caught.value.code == "audio_too_long"


def test_two_hours_is_too_long_for_a_one_hour_clip_limit(two_hours: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECHOVIDS_MAX_CLIP_S", "3600")
    limit = Settings().max_clip_s
    assert limit == 3600
    chunks = 0
    with pytest.raises(AudioTooLong) as caught:
        for _ in decode_bytes_stream(two_hours, max_seconds=limit, chunk_seconds=600):
            chunks += 1
    assert caught.value.code == "audio_too_long"
    assert chunks == 6  # the first hour streamed, then the limit was met


@pytest.mark.parametrize("data", [b"\x00" * 4096, b"RIFF\x24\x00\x00\x00WAVEfmt garbage", b""])
def test_undecodable_bytes(data: bytes) -> None:
    with pytest.raises(UndecodableAudio) as caught:
        decode_bytes(data)
    assert caught.value.code == "undecodable_audio"
    with pytest.raises(UndecodableAudio):
        list(decode_bytes_stream(data))


def test_a_decode_that_hangs_is_stopped_at_the_task_time_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A FIFO nobody writes to: ffmpeg blocks on it for ever, as on a file that hangs it. The threads pool enforces
    # no Celery time limit, so the decoder must.
    fifo = tmp_path / "never.wav"
    os.mkfifo(fifo)
    monkeypatch.setenv("ECHOVIDS_TASK_TIME_LIMIT_S", "1")
    get_settings.cache_clear()
    try:
        for decode in (decode_file, lambda path: list(decode_stream(path))):
            started = time.monotonic()
            with pytest.raises(UndecodableAudio, match="longer than 1 s"):
                decode(fifo)
            assert time.monotonic() - started < 10
    finally:
        get_settings.cache_clear()


def test_a_decode_past_the_decoder_memory_limit_fails_coded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ffmpeg runs under ECHOVIDS_DECODER_MEMORY_MB (RLIMIT_AS): past it the decode fails alone, coded."""
    from tests.sounds import write_noise_ogg

    path = write_noise_ogg(tmp_path / "noise.ogg", 5)
    assert decode_file(path).size == 5 * 16_000  # within the default limit
    monkeypatch.setenv("ECHOVIDS_DECODER_MEMORY_MB", "64")  # below what ffmpeg needs to start
    get_settings.cache_clear()
    try:
        for decode in (decode_file, lambda path: list(decode_stream(path))):
            with pytest.raises(UndecodableAudio, match="at most 64 MB") as caught:
                decode(path)
            assert caught.value.code == "undecodable_audio"
    finally:
        get_settings.cache_clear()


def test_every_failure_is_a_coded_error() -> None:
    for error in (UndecodableAudio, AudioTooShort, AudioTooLong):
        assert issubclass(error, EchovidsError) and error.status == 422


def test_split_graph_equals_the_original_yamnet(model: YamnetTflite) -> None:
    """Front end once per log-mel row, network per frame: bit for bit what yamnet.tflite itself outputs,
    whether frames follow each other (rows shared) or not (each patch computed)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    from echovids.vectors import l2_normalise
    from services.embedder.sessions.litert import YAMNET_EMBEDDING_TENSOR, YAMNET_SCORES_TENSOR, cut

    path = get_settings().model_dir / "yamnet.tflite"
    whole = cut(
        schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0),
        ["input_1"],
        [YAMNET_SCORES_TENSOR, YAMNET_EMBEDDING_TENSOR],
    )
    reference = Interpreter(model_content=whole, num_threads=1)
    reference.allocate_tensors()
    outputs = {o["name"]: o["index"] for o in reference.get_output_details()}
    rng = np.random.default_rng(3)
    waveform = (rng.standard_normal(20 * SR) * np.linspace(0.001, 0.5, 20 * SR)).astype(np.float32)
    waveform[int(7.3 * SR)] = 0.99  # a click that only some of the overlapping frames hold
    frames = frame_waveform(waveform)
    vectors, scores = [], []
    for frame in frames:
        reference.set_tensor(reference.get_input_details()[0]["index"], frame[None])
        reference.invoke()
        vectors.append(reference.get_tensor(outputs[YAMNET_EMBEDDING_TENSOR])[0].copy())
        scores.append(reference.get_tensor(outputs[YAMNET_SCORES_TENSOR])[0].copy())
    expected_vectors, expected_scores = l2_normalise(np.array(vectors)), np.array(scores)

    consecutive = model.embed(frames)
    np.testing.assert_array_equal(consecutive.vectors, expected_vectors)
    np.testing.assert_array_equal(consecutive.scores, expected_scores)  # type: ignore[arg-type]
    shuffled = rng.permutation(len(frames))
    apart = model.embed(frames[shuffled])
    np.testing.assert_array_equal(apart.vectors, expected_vectors[shuffled])
