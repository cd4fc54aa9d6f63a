"""The short-time spectrum every fingerprint reads (echovids/landmarks.py, echovids/onsets.py): 512-point FFT, Hann
window, 16 ms hop, at the decoder's 16 kHz; and the two readings both make of it, local maxima and a per-second
quota of the strongest."""

from __future__ import annotations

import numpy as np
import scipy.fft

from echovids.audio_params import SAMPLE_RATE

N_FFT = 512
HOP = 256  # 16 ms at 16 kHz
HOP_S = HOP / SAMPLE_RATE
# A full-scale sine's peak bin is about N/4 under a Hann window; 80 dB under it is silence to a fingerprint.
FLOOR_MAGNITUDE = N_FFT / 4 * 10**-4
_WINDOW = np.hanning(N_FFT).astype(np.float32)


def magnitude_spectrogram(waveform: np.ndarray) -> np.ndarray:
    """[frames, 257] magnitude, Hann window, 512-point FFT, 16 ms hop."""
    if waveform.size < N_FFT:
        return np.zeros((0, N_FFT // 2 + 1), dtype=np.float32)
    n = 1 + (waveform.size - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(
        np.ascontiguousarray(waveform, dtype=np.float32), shape=(n, N_FFT), strides=(HOP * 4, 4), writeable=False
    )
    # scipy's FFT keeps float32 (numpy's would promote to float64): half the work on the hot path.
    return np.abs(scipy.fft.rfft(frames * _WINDOW, axis=1))


def running_max(x: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Max over +-radius along one axis (edges padded with -inf).

    By doubling: after each step ``span[i]`` is the max of ``2**k`` consecutive cells, so a window of 9 costs 4
    vector maxima instead of 8, all on slices (views), never copies of shifted arrays.
    """
    width = 2 * radius + 1
    pad = [(0, 0), (0, 0)]
    pad[axis] = (radius, radius)
    padded = np.pad(x, pad, constant_values=-np.inf)

    def cells(a: np.ndarray, start: int, length: int) -> np.ndarray:
        return a[start : start + length] if axis == 0 else a[:, start : start + length]

    span, spans = 1, padded
    while span * 2 <= width:
        length = spans.shape[axis] - span
        spans = np.maximum(cells(spans, 0, length), cells(spans, span, length))
        span *= 2
    size = x.shape[axis]
    return np.maximum(cells(spans, 0, size), cells(spans, width - span, size))


def strongest_each(groups: np.ndarray, values: np.ndarray, quota: int) -> np.ndarray:
    """The positions of the ``quota`` largest ``values`` within each group (a second, for a fingerprint's
    quota of peaks or onsets), ordered by group, then largest first."""
    order = np.lexsort((-values, groups))
    grouped = groups[order]
    return order[(np.arange(order.size) - np.searchsorted(grouped, grouped, side="left")) < quota]
