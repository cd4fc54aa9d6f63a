"""The short-time spectrum every fingerprint reads (echovids/landmarks.py, echovids/onsets.py): 512-point FFT, Hann
window, 16 ms hop, at the decoder's 16 kHz."""

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
