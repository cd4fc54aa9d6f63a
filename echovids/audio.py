"""Audio decoding, in one place: any format ffmpeg reads, to 16 kHz mono float32 in [-1, 1]."""

from __future__ import annotations

import functools
import io
import math
import mmap
import os
import resource
import struct
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import scipy.signal

from echovids.audio_params import SAMPLE_RATE
from echovids.errors import AudioTooLong, UndecodableAudio
from echovids.settings import get_settings

# Hard bounds on what a header may claim, checked before anything is allocated from it: a header is written by
# whoever sent the file, and a rate of 0xFFFFFFFF once made the resampler ask for 128 GiB.
RATE_RANGE = (1_000, 768_000)  # Hz: telephone speech up to the fastest studio converters
MAX_CHANNELS = 64
_PCM_BITS = (8, 16, 24, 32)
# In-process resampling by a ratio up/down costs a filter of about 20 * max(up, down) taps; an odd rate (44 101 Hz)
# reduces to a huge ratio, and such files go to ffmpeg's resampler instead.
_MAX_RESAMPLE_FACTOR = 2_000
_READ_BYTES = 1 << 22  # ffmpeg's output is read 4 MB at a time

# Leading bytes of common files that are plainly not audio: rejected before any queueing.
_NOT_AUDIO_MAGIC = (
    b"\x89PNG",
    b"\xff\xd8\xff",  # JPEG
    b"GIF8",
    b"%PDF",
    b"PK\x03\x04",  # zip, docx, xlsx
    b"\x7fELF",
    b"<!DOCTYPE",
    b"<html",
    b"{",
)


@functools.lru_cache
def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def looks_like_non_audio(head: bytes) -> bool:
    """True for bytes whose magic number says image, document, archive or text markup."""
    stripped = head.lstrip()
    return any(stripped.startswith(magic) for magic in _NOT_AUDIO_MAGIC)


def _ffmpeg_command(
    path: Path, max_seconds: float | None, start_s: float = 0.0, duration_s: float | None = None
) -> list[str]:
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error"]
    if start_s > 0:
        cmd += ["-ss", f"{start_s:.4f}"]  # before -i: a seek, not a decode of everything up to there
    cmd += ["-i", str(path)]
    if max_seconds is not None:
        # Decode one second past the limit: enough to know it is too long, bounded memory.
        cmd += ["-t", f"{max_seconds + 1.0:.3f}"]
    elif duration_s is not None:
        cmd += ["-t", f"{duration_s:.4f}"]
    # rematrix_maxval 1: a downmix that averages channels (as the in-process WAV path does) instead of
    # summing them at -3 dB each, which makes stereo 3 dB louder than mono and can clip.
    cmd += [
        "-vn",
        "-rematrix_maxval",
        "1.0",
        "-f",
        "f32le",
        "-acodec",
        "pcm_f32le",
        "-ac",
        "1",
        "-ar",
        str(SAMPLE_RATE),
        "pipe:1",
    ]
    return cmd


def _clean(samples: np.ndarray) -> np.ndarray:
    # Float WAVs may carry NaN/inf or overs; the model expects finite values in [-1, 1]: overs and +-inf clip
    # to +-1, NaN becomes 0. One clipping pass, then a sum (NaN iff some sample is NaN) before the rare fix-up.
    cleaned = np.clip(samples, -1.0, 1.0)
    if np.isnan(cleaned.sum()):
        cleaned[np.isnan(cleaned)] = 0.0
    return cleaned


def hard_limit_s() -> float:
    """The longest audio any decode returns, asked or not: the longer of the query and the clip limits."""
    settings = get_settings()
    return max(settings.max_query_s, settings.max_clip_s)


def _limit(max_seconds: float | None) -> float:
    return hard_limit_s() if max_seconds is None else min(max_seconds, hard_limit_s())


def _too_long(max_seconds: float) -> AudioTooLong:
    return AudioTooLong(f"The audio is longer than the limit of {max_seconds:g} s.")


def decode_file(path: Path, max_seconds: float | None = None) -> np.ndarray:
    """Decode an audio file to 16 kHz mono float32; raises UndecodableAudio or AudioTooLong.

    Without ``max_seconds`` the hard limit (:func:`hard_limit_s`) still applies.
    """
    limit = _limit(max_seconds)
    samples = _run_ffmpeg(_ffmpeg_command(path, limit), max_samples=int((limit + 1.0) * SAMPLE_RATE))
    if samples.size > limit * SAMPLE_RATE:
        raise _too_long(limit)
    return samples


def _ffmpeg_timeout_s() -> float:
    """How long one decode may take: a task's time limit. Under the embedder's threads pool, where Celery enforces
    no limit, a file that makes ffmpeg hang must not hold a worker thread for ever."""
    return float(get_settings().task_time_limit_s)


def _took_too_long(limit_s: float) -> UndecodableAudio:
    return UndecodableAudio(f"The file could not be decoded as audio (decoding took longer than {limit_s:g} s).")


def _undecodable(stderr: bytes) -> UndecodableAudio:
    reason = stderr.decode("utf-8", "replace").strip().splitlines()
    detail = reason[-1] if reason else "no audio stream"
    return UndecodableAudio(f"The file could not be decoded as audio ({detail}).")


def _run_ffmpeg(cmd: list[str], max_samples: int) -> np.ndarray:
    """ffmpeg's output read straight into one array of ``max_samples`` (a lazy allocation: only the pages written
    become memory), so a decode costs the audio once, not the pipe's chunks plus their join plus a copy. ffmpeg is
    stopped as soon as its output passes ``max_samples``: what a container claims is never trusted."""
    out = np.empty(max_samples + 1, dtype=np.float32)  # one sample more: "longer than the limit" is seen
    buffer = out.data.cast("B")
    try:
        with _ffmpeg(cmd) as ffmpeg:
            stdout = ffmpeg.proc.stdout
            assert isinstance(stdout, io.BufferedReader)
            filled = 0
            while filled < len(buffer):
                got = stdout.readinto(buffer[filled : filled + _READ_BYTES])
                if not got:
                    break
                filled += got
            if filled >= len(buffer):  # past the limit: ffmpeg need not finish
                ffmpeg.proc.kill()
                ffmpeg.proc.wait()
                return _clean_in_place(out)
            ffmpeg.check(produced=filled >= 4)
    finally:
        buffer.release()
    return _clean_in_place(out[: filled // 4])


@dataclass
class _Ffmpeg:
    proc: subprocess.Popen[bytes]
    errors: IO[bytes]
    deadline: threading.Timer
    limit_s: float

    def check(self, produced: bool) -> None:
        """Once its output is read: the coded error when ffmpeg failed, hit its deadline, or gave no audio."""
        code = self.proc.wait()
        if code != 0 or not produced:
            if not self.deadline.is_alive():
                raise _took_too_long(self.limit_s)
            if code < 0:  # a signal: what ffmpeg does when an allocation meets the memory limit
                raise UndecodableAudio(
                    f"The file could not be decoded as audio (the decoder stopped on signal {-code}; it may use "
                    f"at most {get_settings().decoder_memory_mb} MB)."
                )
            self.errors.seek(0)
            raise _undecodable(self.errors.read())


@contextmanager
def _ffmpeg(cmd: list[str]) -> Iterator[_Ffmpeg]:
    """ffmpeg decoding to a pipe, killed at the decode deadline and never left running or unreaped."""
    limit_s = _ffmpeg_timeout_s()
    with tempfile.TemporaryFile() as errors:
        limit = get_settings().decoder_memory_mb << 20
        # Set in the child before exec: a hostile file meets the limit in ffmpeg, never in this process.
        in_bounds = functools.partial(resource.setrlimit, resource.RLIMIT_AS, (limit, limit))
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, preexec_fn=in_bounds)
        assert proc.stdout is not None
        deadline = threading.Timer(limit_s, proc.kill)
        deadline.start()
        try:
            yield _Ffmpeg(proc, errors, deadline, limit_s)
        finally:
            deadline.cancel()
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()


def _clean_in_place(samples: np.ndarray) -> np.ndarray:
    """:func:`_clean` without a second array (``samples`` is ours to change)."""
    np.clip(samples, -1.0, 1.0, out=samples)
    if np.isnan(samples.sum()):
        samples[np.isnan(samples)] = 0.0
    return samples


def decode_window(path: Path, start_s: float, seconds: float) -> np.ndarray:
    """``seconds`` of a stored file from ``start_s`` on, decoded like :func:`decode_file` (shorter at its end).

    A WAV file is mapped, not read: only the window's bytes are touched, however long the recording.
    """
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
    if mapped is not None:
        with mapped:
            view = memoryview(mapped)
            wav = _decode_wav(view, None, (start_s, seconds))  # a new array (_clean copies): none points inside
            view.release()
        if wav is not None:
            return wav
    seconds = min(seconds, hard_limit_s())
    return _run_ffmpeg(
        _ffmpeg_command(path, None, start_s=start_s, duration_s=seconds),
        max_samples=int((seconds + 1.0) * SAMPLE_RATE),
    )


def decode_stream(path: Path, max_seconds: float | None = None, chunk_seconds: float = 30.0) -> Iterator[np.ndarray]:
    """Decode like :func:`decode_file`, yielding chunks of ``chunk_seconds`` (the last one shorter).

    The chunks, concatenated, are exactly what ``decode_file`` returns; memory stays at one chunk however long
    the file. Errors are the same, raised when met: ``AudioTooLong`` as soon as the limit is passed (after the
    chunks before it were yielded), ``UndecodableAudio`` at the end when ffmpeg failed or gave no audio.
    """
    chunk_bytes = max(1, int(chunk_seconds * SAMPLE_RATE)) * 4
    max_seconds = _limit(max_seconds)
    # The deadline covers the whole read, the consumer's time between chunks included (a task's limit).
    with _ffmpeg(_ffmpeg_command(path, max_seconds)) as ffmpeg:
        stdout = ffmpeg.proc.stdout
        assert stdout is not None
        total = 0
        while buffer := stdout.read(chunk_bytes):
            samples = np.frombuffer(buffer[: len(buffer) // 4 * 4], dtype=np.float32)
            total += samples.size
            if total > max_seconds * SAMPLE_RATE:
                raise _too_long(max_seconds)
            if samples.size:
                yield _clean(samples)
        ffmpeg.check(produced=total > 0)


_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


def _check_format(tag: int, channels: int, rate: int, bits: int) -> None:
    """Refuse a header no real recording has, before anything is sized from it (UndecodableAudio)."""
    if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
        raise UndecodableAudio(
            f"Unsupported audio: a sample rate of {rate} Hz (supported: {RATE_RANGE[0]} to {RATE_RANGE[1]} Hz)."
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise UndecodableAudio(f"Unsupported audio: {channels} channels (supported: 1 to {MAX_CHANNELS}).")
    if (tag == _PCM and bits not in _PCM_BITS) or (tag == _FLOAT and bits not in (32, 64)):
        raise UndecodableAudio(f"Unsupported audio: {bits} bits per sample.")


def parse_wav(
    data: bytes | memoryview, window: tuple[float, float] | None = None, max_seconds: float | None = None
) -> tuple[np.ndarray, int] | None:
    """Samples [n, channels] as float32 and the rate of a plain PCM/float WAV; None for anything else.

    A short query recorded as WAV is the common case, and starting ffmpeg costs more than the search itself.
    ``window`` (start, seconds) converts only that stretch: a few seconds of an hour-long file. A header out of
    bounds raises UndecodableAudio; a data chunk longer than ``max_seconds`` (+1 s) raises AudioTooLong, both
    before any sample is converted.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    fmt: tuple[int, int, int, int] | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = data[pos + 8 : pos + 8 + size]
        if chunk == b"fmt " and len(body) >= 16:
            tag, channels, rate = struct.unpack_from("<HHI", body)
            bits = struct.unpack_from("<H", body, 14)[0]
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack_from("<H", body, 24)[0]  # the sub-format GUID starts with the real tag
            _check_format(tag, channels, rate, bits)
            fmt = (tag, channels, rate, bits)
        elif chunk == b"data" and fmt is not None:
            tag, channels, rate, bits = fmt
            if size != len(body) or tag not in (_PCM, _FLOAT) or (tag, bits) == (_FLOAT, 64):
                return None  # truncated, or a format converted here seldom enough: ffmpeg's judgement
            width = bits // 8
            if max_seconds is not None and len(body) // (width * channels) > (max_seconds + 1.0) * rate:
                raise _too_long(max_seconds)
            usable = len(body) // (width * channels) * width * channels
            raw = body[:usable]
            if window is not None:
                first = max(0, round(window[0] * rate)) * width * channels
                raw = raw[first : first + max(0, round(window[1] * rate)) * width * channels]
            # float32 throughout: 24 bits of mantissa hold every PCM format exactly enough, at half the memory
            # traffic of float64 (an hour of audio is 58 M samples).
            if tag == _FLOAT and bits == 32:
                x = np.frombuffer(raw, "<f4")
            elif tag == _PCM and bits == 16:
                x = np.frombuffer(raw, "<i2") * np.float32(1 / 32768)
            elif tag == _PCM and bits == 8:
                x = (np.frombuffer(raw, np.uint8) - np.float32(128)) * np.float32(1 / 128)
            elif tag == _PCM and bits == 24:
                b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
                x = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8) * np.float32(1 / 8388608)
            elif tag == _PCM and bits == 32:
                x = np.frombuffer(raw, "<i4") * np.float32(1 / 2147483648)
            else:
                return None
            return x.reshape(-1, channels), rate
        pos += 8 + size + (size & 1)
    return None


def _decode_wav(
    data: bytes | memoryview, max_seconds: float | None, window: tuple[float, float] | None = None
) -> np.ndarray | None:
    if window is None:
        max_seconds = _limit(max_seconds)
    parsed = parse_wav(data, window, max_seconds)
    if parsed is None:
        return None
    frames, rate = parsed
    common = math.gcd(rate, SAMPLE_RATE)
    if max(SAMPLE_RATE // common, rate // common) > _MAX_RESAMPLE_FACTOR:
        return None
    mono = frames[:, 0] if frames.shape[1] == 1 else frames.mean(axis=1, dtype=np.float64)
    if rate != SAMPLE_RATE:
        mono = scipy.signal.resample_poly(mono, SAMPLE_RATE // common, rate // common)
    if max_seconds is not None and mono.size > max_seconds * SAMPLE_RATE:
        raise _too_long(max_seconds)
    return _clean(np.asarray(mono, dtype=np.float32))


def decode_bytes(data: bytes, max_seconds: float | None = None) -> np.ndarray:
    """Decode in-memory audio: plain WAV in-process, the rest by ffmpeg through a temp file (MP4/M4A seek)."""
    if not data:
        raise UndecodableAudio("The file is empty.")
    wav = _decode_wav(data, max_seconds)
    if wav is not None:
        return wav
    with tempfile.NamedTemporaryFile(suffix=".bin") as tmp:
        tmp.write(data)
        tmp.flush()
        return decode_file(Path(tmp.name), max_seconds=max_seconds)


def decode_bytes_stream(
    data: bytes, max_seconds: float | None = None, chunk_seconds: float = 30.0
) -> Iterator[np.ndarray]:
    """:func:`decode_stream` for in-memory audio (through a temp file that lives while the chunks are read).

    A plain WAV's header is checked here first, like :func:`decode_bytes` does (bounds, duration); one at 16 kHz
    is converted in-process a chunk at a time, the samples :func:`decode_bytes` would give.
    """
    if not data:
        raise UndecodableAudio("The file is empty.")
    if _is_wav_at_rate(data, max_seconds):
        yield from _wav_chunks(memoryview(data), chunk_seconds)
        return
    with tempfile.NamedTemporaryFile(suffix=".bin") as tmp:
        tmp.write(data)
        tmp.flush()
        yield from decode_stream(Path(tmp.name), max_seconds=max_seconds, chunk_seconds=chunk_seconds)


def decode_file_stream(
    path: Path, max_seconds: float | None = None, chunk_seconds: float = 30.0
) -> Iterator[np.ndarray]:
    """:func:`decode_stream` for a stored file; a 16 kHz WAV is mapped and converted a chunk at a time in-process.

    Memory stays at one chunk however long the file (a stored library clip may last hours).
    """
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
    if mapped is None:
        raise UndecodableAudio("The file is empty.")
    with mapped:
        view = memoryview(mapped)
        try:
            if _is_wav_at_rate(view, max_seconds):
                yield from _wav_chunks(view, chunk_seconds)
                return
        finally:
            view.release()  # every chunk is a new array (_clean copies): nothing points into the map
    yield from decode_stream(path, max_seconds=max_seconds, chunk_seconds=chunk_seconds)


def _is_wav_at_rate(data: bytes | memoryview, max_seconds: float | None) -> bool:
    """A plain WAV at the model's rate (bounds and duration checked, nothing converted): streamed in-process."""
    header = parse_wav(data, window=(0.0, 0.0), max_seconds=_limit(max_seconds))
    return header is not None and header[1] == SAMPLE_RATE


def _wav_chunks(view: memoryview, chunk_seconds: float) -> Iterator[np.ndarray]:
    start = 0.0
    while (chunk := _decode_wav(view, None, (start, chunk_seconds))) is not None and chunk.size:
        yield chunk
        start += chunk_seconds
