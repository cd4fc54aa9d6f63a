"""Waveform to model frames: 0.975 s windows (YAMNet's input, one 0.96 s log-mel patch) every 0.48 s."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from echovids.audio_params import FRAME_HOP_S, FRAME_HOP_SAMPLES, FRAME_SAMPLES, MIN_CLIP_SAMPLES, SAMPLE_RATE
from echovids.errors import AudioTooShort


def frame_count(n_samples: int) -> int:
    """Frames for a waveform; the tail frame (or a sound shorter than one frame) is zero-padded when at least
    half a hop remains."""
    if n_samples < MIN_CLIP_SAMPLES:
        return 0
    extra = max(0, n_samples - FRAME_SAMPLES)
    return 1 + (extra + FRAME_HOP_SAMPLES // 2) // FRAME_HOP_SAMPLES


def too_short(n_samples: int, minimum: int) -> AudioTooShort:
    return AudioTooShort(
        f"The audio lasts {n_samples / SAMPLE_RATE:.2f} s; at least {minimum / SAMPLE_RATE:.2f} s is needed."
    )


def frame_waveform(waveform: np.ndarray) -> np.ndarray:
    """Return [n, FRAME_SAMPLES] float32 frames; raises AudioTooShort under MIN_CLIP_SAMPLES."""
    n = frame_count(waveform.size)
    if n == 0:
        raise too_short(waveform.size, MIN_CLIP_SAMPLES)
    needed = (n - 1) * FRAME_HOP_SAMPLES + FRAME_SAMPLES
    padded = np.zeros(needed, dtype=np.float32)
    padded[: min(needed, waveform.size)] = waveform[:needed]
    strides = (FRAME_HOP_SAMPLES * 4, 4)
    return np.lib.stride_tricks.as_strided(padded, shape=(n, FRAME_SAMPLES), strides=strides).copy()


def frame_start_s(index: int) -> float:
    return index * FRAME_HOP_S


def frame_blocks(chunks: Iterable[np.ndarray], block_frames: int = 256) -> Iterator[np.ndarray]:
    """The rows of ``frame_waveform(concatenate(chunks))``, in blocks of at most ``block_frames`` frames.

    Memory holds one chunk plus one block, whatever the total length. Raises AudioTooShort (having yielded
    nothing) when the whole waveform has no full frame.
    """
    if block_frames < 1:
        raise ValueError("block_frames must be positive")
    pending = np.zeros(0, dtype=np.float32)  # samples from the start of the next frame on
    total = 0
    emitted = 0
    span = (block_frames - 1) * FRAME_HOP_SAMPLES + FRAME_SAMPLES
    for chunk in chunks:
        total += chunk.size
        pending = np.concatenate([pending, np.asarray(chunk, dtype=np.float32)])
        while pending.size >= span:
            yield _strided(pending, block_frames)
            pending = pending[block_frames * FRAME_HOP_SAMPLES :]
            emitted += block_frames
    remaining = frame_count(total) - emitted
    if frame_count(total) == 0:
        raise too_short(total, MIN_CLIP_SAMPLES)
    while remaining > 0:
        count = min(remaining, block_frames)
        needed = (count - 1) * FRAME_HOP_SAMPLES + FRAME_SAMPLES
        tail = np.zeros(needed, dtype=np.float32)
        tail[: min(needed, pending.size)] = pending[:needed]
        yield _strided(tail, count)
        pending = pending[count * FRAME_HOP_SAMPLES :]
        remaining -= count


def _strided(samples: np.ndarray, count: int) -> np.ndarray:
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    return np.lib.stride_tricks.as_strided(
        samples, shape=(count, FRAME_SAMPLES), strides=(FRAME_HOP_SAMPLES * 4, 4), writeable=False
    ).copy()


def frame_loudness_db(waveform: np.ndarray) -> np.ndarray:
    """Each frame's RMS level in dB full scale (the frames of ``frame_waveform``, zero-padded tail included)."""
    n = frame_count(waveform.size)
    samples = np.ascontiguousarray(waveform, dtype=np.float32)
    whole = min(n, (samples.size - FRAME_SAMPLES) // FRAME_HOP_SAMPLES + 1) if samples.size >= FRAME_SAMPLES else 0
    energy = np.empty(n)
    # A strided view, not a frame matrix: no copy, and ~17x faster than a running sum in float64 (0.08 ms
    # against 1.4 ms for a 10 s query).
    if whole:
        windows = np.lib.stride_tricks.sliding_window_view(samples, FRAME_SAMPLES)[::FRAME_HOP_SAMPLES][:whole]
        energy[:whole] = np.einsum("ij,ij->i", windows, windows)
    for i in range(whole, n):  # the tail frame runs past the end, where frame_waveform pads with zeros
        tail = samples[i * FRAME_HOP_SAMPLES :]
        energy[i] = np.dot(tail, tail)
    return 10 * np.log10(np.maximum(energy / FRAME_SAMPLES, 1e-20))
