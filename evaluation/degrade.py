"""Degradations of a query: additive noise at a given SNR, telephone band-limiting, room reverb, opus/webm.

Every function takes and returns 16 kHz mono float32 (the opus round trip also gives the encoded bytes, which are
what a browser would upload).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
from scipy.signal import butter, fftconvolve, sosfiltfilt

from echovids.audio import decode_file, ffmpeg_exe
from echovids.audio_params import SAMPLE_RATE
from echovids.harness import write_wav

PEAK = 0.99


def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x.astype(np.float64)))) if x.size else 0.0


def snr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    return 10.0 * np.log10(power(signal) / power(noise))


def scale_noise(signal: np.ndarray, noise: np.ndarray, snr: float) -> np.ndarray:
    """``noise`` scaled so that ``power(signal) / power(scaled) = 10 ** (snr / 10)``."""
    p_noise = power(noise)
    if p_noise == 0.0:
        raise ValueError("silent noise cannot be scaled to an SNR")
    return (noise * np.sqrt(power(signal) / (p_noise * 10.0 ** (snr / 10.0)))).astype(np.float32)


def normalise_peak(x: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """Scaled down (never up) so nothing clips; one gain for the whole mix keeps its SNR."""
    top = float(np.max(np.abs(x))) if x.size else 0.0
    return (x * (peak / top) if top > peak else x).astype(np.float32)


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr: float) -> np.ndarray:
    """``signal`` plus ``noise`` (same length) at ``snr`` dB, the mix scaled down if it would clip."""
    return normalise_peak(signal + scale_noise(signal, noise[: signal.size], snr))


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n).astype(np.float32)


def band_limit(
    x: np.ndarray, low_hz: float = 300.0, high_hz: float = 3400.0, sr: int = SAMPLE_RATE, order: int = 8
) -> np.ndarray:
    """Telephone band: Butterworth band-pass, run forwards and backwards (zero phase, so no time shift)."""
    sos = butter(order, [low_hz, high_hz], btype="bandpass", fs=sr, output="sos")
    return normalise_peak(sosfiltfilt(sos, x.astype(np.float64)).astype(np.float32))


def room_impulse_response(
    rng: np.random.Generator, rt60_s: float = 0.4, sr: int = SAMPLE_RATE, drr_db: float = 0.0
) -> np.ndarray:
    """Synthetic room: a direct path, then exponentially decaying noise (60 dB down after ``rt60_s``).

    ``drr_db`` is the direct-to-reverberant energy ratio (0 dB: a few metres from the speaker).
    """
    n = int(1.2 * rt60_s * sr)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-3.0 * np.log(10.0) * t / rt60_s)  # amplitude: -60 dB at rt60
    tail[0] = 0.0
    tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / np.sum(tail**2))
    ir = tail
    ir[0] = 1.0
    return ir.astype(np.float32)


def reverb(x: np.ndarray, rng: np.random.Generator, rt60_s: float = 0.4) -> np.ndarray:
    """``x`` played in a synthetic room (same length: the tail past the end is cut, as a recording would)."""
    wet = fftconvolve(x.astype(np.float64), room_impulse_response(rng, rt60_s))[: x.size]
    return normalise_peak(wet.astype(np.float32))


def opus_roundtrip(x: np.ndarray, bitrate_kbps: int = 32, sr: int = SAMPLE_RATE) -> tuple[bytes, np.ndarray]:
    """Encode to opus in webm (libopus, as a browser's MediaRecorder does) and decode back to 16 kHz mono.

    Returns (the webm bytes, the decoded audio).
    """
    with tempfile.TemporaryDirectory() as tmp:
        source = write_wav(Path(tmp) / "in.wav", x, sr)
        target = Path(tmp) / "out.webm"
        subprocess.run(
            [
                ffmpeg_exe(),
                "-nostdin",
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-i",
                str(source),
                "-c:a",
                "libopus",
                "-b:a",
                f"{bitrate_kbps}k",
                "-f",
                "webm",
                str(target),
            ],
            check=True,
            capture_output=True,
        )
        data = target.read_bytes()
        decoded = decode_file(target)
    return data, decoded
