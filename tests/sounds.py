"""Synthetic test sounds: distinct, reproducible, and written as real audio files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from echovids.audio import ffmpeg_exe

SR = 16_000


def synthetic_library(count: int = 20, seconds: float = 8.0, seed: int = 7) -> list[np.ndarray]:
    """``count`` distinct sounds whose character changes over time (so an offset is identifiable)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    sounds = []
    for i in range(count):
        kind = i % 4
        if kind == 0:  # chirp sweeping up or down at its own rate
            f0, f1 = rng.uniform(150, 1500), rng.uniform(1500, 6000)
            if i % 8 == 4:
                f0, f1 = f1, f0
            phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
            x = 0.5 * np.sin(phase)
        elif kind == 1:  # tone bursts: random pitches, lengths and gaps
            x = np.zeros_like(t)
            pos = 0.0
            while pos < seconds:
                length, gap = rng.uniform(0.1, 0.6), rng.uniform(0.05, 0.5)
                sel = (t >= pos) & (t < pos + length)
                x[sel] = 0.5 * np.sin(2 * np.pi * rng.uniform(200, 4000) * t[sel])
                pos += length + gap
        elif kind == 2:  # noise band whose centre wanders
            noise = rng.standard_normal(t.size)
            spectrum = np.fft.rfft(noise)
            freqs = np.fft.rfftfreq(t.size, 1 / SR)
            lo = rng.uniform(100, 3000)
            spectrum[(freqs < lo) | (freqs > lo * rng.uniform(1.3, 2.5))] = 0
            x = np.fft.irfft(spectrum, n=t.size)
            x *= 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(0.2, 1.5) * t)) * 0.4 / (np.std(x) + 1e-9)
        else:  # clicks at a rate that drifts, through a resonant tone
            rate = rng.uniform(2, 12)
            clicks = np.zeros_like(t)
            times = np.cumsum(1 / (rate * rng.uniform(0.7, 1.3, size=int(seconds * rate * 2))))
            idx = (times[times < seconds] * SR).astype(int)
            clicks[idx] = 1.0
            kernel_t = np.arange(int(0.03 * SR)) / SR
            kernel = np.sin(2 * np.pi * rng.uniform(500, 5000) * kernel_t) * np.exp(-kernel_t * 150)
            x = 0.8 * np.convolve(clicks, kernel)[: t.size]
        sounds.append(x.astype(np.float32))
    return sounds


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    p_signal = np.mean(signal**2)
    p_noise = np.mean(noise**2) + 1e-12
    scale = np.sqrt(p_signal / (p_noise * 10 ** (snr_db / 10)))
    return (signal + scale * noise).astype(np.float32)


def write_silent_flac(path: Path, seconds: float, sr: int = 8000) -> Path:
    """Long silent audio made by ffmpeg in seconds (two hours of 8 kHz FLAC is about 0.7 MB)."""
    cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", f"anullsrc=r={sr}:cl=mono"]
    subprocess.run([*cmd, "-t", str(seconds), "-c:a", "flac", str(path)], check=True)
    return path


def write_noise_ogg(path: Path, seconds: float) -> Path:
    """Pink noise as Opus: minutes of audio in a small file, every second of it loud enough to be indexed."""
    noise = f"anoisesrc=d={seconds}:c=pink:r=16000:a=0.3"
    encode = ["-ac", "1", "-c:a", "libopus", "-b:a", "12k", str(path)]
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", noise, *encode], check=True)
    return path
