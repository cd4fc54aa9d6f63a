"""The log-mel front end of VGGish and YAMNet, in numpy.

25 ms periodic-Hann window, 10 ms hop, 512-point FFT magnitude, 64 mel bands (HTK mel scale) from 125 Hz to
7500 Hz, ``log(mel + offset)``; patches of 96 frames (0.96 s). The log offset is 0.001 for YAMNet and 0.01 for
VGGish. The mel matrix is the one ``tf.signal.linear_to_mel_weight_matrix`` builds (the DC bin gets no weight),
which is also what VGGish's ``mel_features.spectrogram_to_mel_matrix`` computes.

Neither model needs it at run time: YAMNet's TFLite graph and VGGish's SavedModel compute it themselves. It is the
reference the tests hold YAMNet's front end to, the VGGish-shaped test model's front end, and the benchmark's
front-end line. Its parameters are the models' own (echovids.audio_params).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from echovids.audio_params import (
    FFT_LENGTH,
    MEL_BANDS,
    MEL_MAX_HZ,
    MEL_MIN_HZ,
    PATCH_HOP_ROWS,
    PATCH_ROWS,
    SAMPLE_RATE,
    STFT_HOP_SAMPLES,
    STFT_WINDOW_SAMPLES,
    YAMNET_LOG_OFFSET,
)


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale, as VGGish and tf.signal use it."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


@lru_cache(maxsize=4)
def mel_matrix(
    bands: int = MEL_BANDS,
    fft_length: int = FFT_LENGTH,
    sample_rate: int = SAMPLE_RATE,
    low_hz: float = MEL_MIN_HZ,
    high_hz: float = MEL_MAX_HZ,
) -> np.ndarray:
    """[fft_length // 2 + 1, bands] triangular weights, overlapping by half in mel space."""
    bins = fft_length // 2 + 1
    bin_mel = hz_to_mel(np.linspace(0.0, sample_rate / 2, bins))[:, None]
    edges = np.linspace(hz_to_mel(low_hz), hz_to_mel(high_hz), bands + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mel - lower) / (centre - lower)
    falling = (upper - bin_mel) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0  # the DC bin carries no mel energy
    weights.flags.writeable = False
    return weights.astype(np.float32)


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    n = np.arange(STFT_WINDOW_SAMPLES)
    return (0.5 - 0.5 * np.cos(2 * np.pi * n / STFT_WINDOW_SAMPLES)).astype(np.float32)  # periodic Hann


def stft_frames(n_samples: int) -> int:
    return 0 if n_samples < STFT_WINDOW_SAMPLES else 1 + (n_samples - STFT_WINDOW_SAMPLES) // STFT_HOP_SAMPLES


def log_mel(waveform: np.ndarray, log_offset: float = YAMNET_LOG_OFFSET) -> np.ndarray:
    """[frames, 64] log-mel spectrogram of a 16 kHz mono waveform (no padding: partial windows are dropped)."""
    x = np.asarray(waveform, dtype=np.float32)
    n = stft_frames(x.size)
    if n == 0:
        return np.zeros((0, MEL_BANDS), dtype=np.float32)
    frames = np.lib.stride_tricks.as_strided(
        x, shape=(n, STFT_WINDOW_SAMPLES), strides=(STFT_HOP_SAMPLES * x.strides[0], x.strides[0]), writeable=False
    )
    magnitude = np.abs(np.fft.rfft(frames * _window(), n=FFT_LENGTH, axis=1)).astype(np.float32)
    return np.log(magnitude @ mel_matrix() + np.float32(log_offset))


def patches(spectrogram: np.ndarray, hop_rows: int = PATCH_HOP_ROWS) -> np.ndarray:
    """[n, 96, 64] patches of a log-mel spectrogram every ``hop_rows`` (48 = 0.48 s, 96 = VGGish's 0.96 s)."""
    if spectrogram.shape[0] < PATCH_ROWS:
        return np.zeros((0, PATCH_ROWS, spectrogram.shape[1]), dtype=np.float32)
    n = 1 + (spectrogram.shape[0] - PATCH_ROWS) // hop_rows
    s0, s1 = spectrogram.strides
    return np.lib.stride_tricks.as_strided(
        spectrogram, shape=(n, PATCH_ROWS, spectrogram.shape[1]), strides=(hop_rows * s0, s0, s1)
    ).copy()


def frame_patches(frames: np.ndarray, log_offset: float = YAMNET_LOG_OFFSET) -> np.ndarray:
    """[n, 96, 64]: one patch per 0.975 s model frame (echovids.framing.frame_waveform's rows)."""
    return (
        np.stack([log_mel(frame, log_offset)[:PATCH_ROWS] for frame in frames])
        if len(frames)
        else (np.zeros((0, PATCH_ROWS, MEL_BANDS), dtype=np.float32))
    )
