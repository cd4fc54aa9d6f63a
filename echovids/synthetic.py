"""Seeded synthetic sounds of the kinds a video editor meets: tones, sweeps, beeps, hums, clicks, hits and noise.

Every parameter (frequencies, rates, depths, durations, levels) is drawn from the generator, so a suite is many
sounds per kind, not one; the same seed gives the same suite, and :func:`fresh_seed` gives a new one per run.

Tonal sounds carry a slow level drift of a few dB, as a real oscillator played through a speaker does: a
mathematically steady tone is the same at every moment, so no method could say *where* an excerpt of it lies.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import numpy as np
import scipy.signal

from echovids.audio import SAMPLE_RATE

KINDS = (
    "pure_tone",
    "chirp",
    "am_tone",
    "fm_tone",
    "click_train",
    "tone_mix",
    "shaped_noise",
    "hum",
    "beep_pattern",
    "hit",
)
LONG_S = (6.0, 10.0)
SHORT_S = (0.25, 0.9)
DRIFT_DB = (1.0, 3.0)  # peak level drift of a tonal sound
FADE_S = 0.01  # onset and release ramps: no click at the edges of a tonal sound


@dataclass
class Sound:
    name: str
    kind: str
    waveform: np.ndarray  # float32, 16 kHz mono, peak below 1
    params: dict[str, float] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.waveform.size / SAMPLE_RATE


def fresh_seed() -> int:
    """A new seed for a run that must not repeat an earlier one (print it, so the run can be repeated)."""
    return secrets.randbits(32)


def _times(seconds: float) -> np.ndarray:
    return np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _drift(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A slow random gain (three sinusoids of 0.05-0.8 Hz) peaking at DRIFT_DB dB."""
    db = np.zeros_like(t)
    for _ in range(3):
        db += np.sin(2 * np.pi * rng.uniform(0.05, 0.8) * t + rng.uniform(0, 2 * np.pi))
    peak = float(np.max(np.abs(db))) or 1.0
    return 10 ** (db / peak * rng.uniform(*DRIFT_DB) / 20)


def _fade(x: np.ndarray) -> np.ndarray:
    n = min(round(FADE_S * SAMPLE_RATE), x.size // 2)
    if n:
        ramp = np.linspace(0.0, 1.0, n)
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def _tone_from_frequency(freq: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A sinusoid following an instantaneous frequency track (Hz per sample), random starting phase."""
    return np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE + rng.uniform(0, 2 * np.pi))


def pure_tone(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, dict[str, float]]:
    t = _times(seconds)
    f = _log_uniform(rng, 150, 5000)
    return np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) * _drift(rng, t), {"freq_hz": f}


def chirp(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, dict[str, float]]:
    """One sweep over the whole sound, up or down, linear or exponential in frequency."""
    t = _times(seconds)
    f0, f1 = _log_uniform(rng, 150, 6000), _log_uniform(rng, 150, 6000)
    exponential = rng.random() < 0.5
    freq = f0 * (f1 / f0) ** (t / seconds) if exponential else f0 + (f1 - f0) * t / seconds
    return _tone_from_frequency(freq, rng) * _drift(rng, t), {"f0_hz": f0, "f1_hz": f1}


def am_tone(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, dict[str, float]]:
    t = _times(seconds)
    f, rate, depth = _log_uniform(rng, 200, 4000), _log_uniform(rng, 2, 40), rng.uniform(0.3, 1.0)
    envelope = 1 - depth * 0.5 * (1 + np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
    tone = np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    return tone * envelope * _drift(rng, t), {"freq_hz": f, "rate_hz": rate, "depth": depth}


def fm_tone(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, dict[str, float]]:
    """A siren-like tone: the carrier swings sinusoidally around its centre."""
    t = _times(seconds)
    f, rate = _log_uniform(rng, 300, 3000), _log_uniform(rng, 0.3, 8)
    deviation = f * rng.uniform(0.02, 0.4)
    freq = f + deviation * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    return _tone_from_frequency(freq, rng) * _drift(rng, t), {"freq_hz": f, "rate_hz": rate, "dev_hz": deviation}


def _click(rng: np.random.Generator, bright: float) -> np.ndarray:
    """A few ms of decaying noise, as a mechanical tick."""
    n = round(rng.uniform(0.002, 0.01) * SAMPLE_RATE)
    burst = rng.standard_normal(n) * np.exp(-np.arange(n) / (n / 4))
    # A one-pole low-pass: each mechanism's ticks have their own colour.
    return np.asarray(scipy.signal.lfilter([bright], [1.0, bright - 1.0], burst))


def click_train(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, dict[str, float]]:
    """Clicks at a steady rate, with the small timing and level jitter of a real mechanism."""
    n = round(seconds * SAMPLE_RATE)
    rate, bright = _log_uniform(rng, 2, 30), rng.uniform(0.2, 1.0)
    x = np.zeros(n)
    period = 1.0 / rate
    at = rng.uniform(0, period)
    while at < seconds:
        click = _click(rng, bright) * 10 ** (rng.normal(0, 2) / 20)
        start = round(at * SAMPLE_RATE)
        end = min(n, start + click.size)
        x[start:end] += click[: end - start]
        at += period * (1 + rng.normal(0, 0.02))
    return x, {"rate_hz": rate}


def tone_mix(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, dict[str, float]]:
    t = _times(seconds)
    count = int(rng.integers(2, 6))
    x = np.zeros_like(t)
    for _ in range(count):
        f = _log_uniform(rng, 150, 5000)
        x += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) * _drift(rng, t)
    return x, {"tones": count}


def shaped_noise(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, dict[str, float]]:
    """White noise given a random spectral tilt and one or two resonances (wind, fans, rain, air)."""
    n = round(seconds * SAMPLE_RATE)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    tilt = rng.uniform(-1.0, 0.5)  # power-law slope of the amplitude spectrum
    shape = (np.maximum(freqs, 50.0) / 1000.0) ** tilt
    for _ in range(int(rng.integers(1, 3))):
        centre, width = _log_uniform(rng, 200, 6000), _log_uniform(rng, 50, 1500)
        shape += rng.uniform(1, 6) * np.exp(-0.5 * ((freqs - centre) / width) ** 2)
    x = np.fft.irfft(spectrum * shape, n)
    return x * _drift(rng, _times(seconds)), {"tilt": tilt}


def hum(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, dict[str, float]]:
    """Mains hum or an engine's drone: a low fundamental and its harmonics."""
    t = _times(seconds)
    f0 = float(rng.choice([50.0, 60.0])) * float(rng.choice([1, 2])) * rng.uniform(0.97, 1.03)
    if rng.random() < 0.5:
        f0 = _log_uniform(rng, 40, 200)  # an engine, not the mains
    harmonics, slope = int(rng.integers(4, 16)), rng.uniform(0.3, 1.5)
    x = np.zeros_like(t)
    for k in range(1, harmonics + 1):
        if k * f0 < SAMPLE_RATE / 2 - 500:
            x += rng.uniform(0.5, 1.0) / k**slope * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
    return x * _drift(rng, t), {"f0_hz": f0, "harmonics": harmonics}


def beep_pattern(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, dict[str, float]]:
    """Tone bursts with random lengths and gaps (UI sounds, alarms, reversing trucks)."""
    n = round(seconds * SAMPLE_RATE)
    f = _log_uniform(rng, 400, 4000)
    gate = np.zeros(n)
    at = rng.uniform(0, 0.1)
    on_mean, off_mean = rng.uniform(0.05, 0.4), rng.uniform(0.05, 0.5)
    while at < seconds:
        start, length = round(at * SAMPLE_RATE), round(on_mean * rng.uniform(0.7, 1.3) * SAMPLE_RATE)
        gate[start : start + length] = 1.0
        at += (start + length) / SAMPLE_RATE - at + off_mean * rng.uniform(0.5, 1.5)
    gate = np.convolve(gate, np.ones(40) / 40, mode="same")  # 2.5 ms edges: no clicks
    t = _times(seconds)
    return gate * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)), {"freq_hz": f, "on_s": on_mean}


def _one_hit(rng: np.random.Generator) -> np.ndarray:
    """A knock or shot: a noise burst decaying fast, plus two or three ringing modes."""
    n = round(rng.uniform(0.1, 0.4) * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    x = rng.standard_normal(n) * np.exp(-t / rng.uniform(0.005, 0.04))
    for _ in range(int(rng.integers(2, 4))):
        f = _log_uniform(rng, 100, 3000)
        x += rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * f * t) * np.exp(-t / rng.uniform(0.02, 0.15))
    return x


def hit(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, dict[str, float]]:
    """One hit at the start of a short sound; hits at irregular moments in a long one."""
    n = round(seconds * SAMPLE_RATE)
    x = np.zeros(n)
    at, count = rng.uniform(0, 0.05), 0
    while at < seconds:
        one = _one_hit(rng) * 10 ** (rng.normal(0, 3) / 20)
        start = round(at * SAMPLE_RATE)
        end = min(n, start + one.size)
        x[start:end] += one[: end - start]
        at += rng.uniform(0.3, 1.5)
        count += 1
    return x, {"hits": count}


MAKERS = {
    "pure_tone": pure_tone,
    "chirp": chirp,
    "am_tone": am_tone,
    "fm_tone": fm_tone,
    "click_train": click_train,
    "tone_mix": tone_mix,
    "shaped_noise": shaped_noise,
    "hum": hum,
    "beep_pattern": beep_pattern,
    "hit": hit,
}


def make_sound(kind: str, rng: np.random.Generator, long: bool = True, name: str | None = None) -> Sound:
    """One sound of ``kind``: 6-10 s long, or with ``long=False`` 0.25-0.9 s; peak level 0.3-0.9."""
    seconds = float(rng.uniform(*(LONG_S if long else SHORT_S)))
    x, params = MAKERS[kind](rng, seconds)
    if kind not in ("click_train", "hit"):
        x = _fade(x)
    top = float(np.max(np.abs(x))) or 1.0
    x = x / top * rng.uniform(0.3, 0.9)
    params = {"seconds": seconds, **params}
    return Sound(name=name or kind, kind=kind, waveform=x.astype(np.float32), params=params)


def make_suite(
    seed: int, n_per_kind: int, kinds: tuple[str, ...] = KINDS, lengths: tuple[str, ...] = ("long",)
) -> list[Sound]:
    """``n_per_kind`` sounds of each kind and length ("long", "short"), named ``{kind}_{length}_{i:03d}``.

    Each kind and length draws from its own stream of the seed, so adding a kind leaves the others as they were.
    """
    sounds = []
    for kind in kinds:
        for length in lengths:
            index = KINDS.index(kind) if kind in KINDS else len(KINDS)
            rng = np.random.default_rng([seed, index, 0 if length == "long" else 1])
            for i in range(n_per_kind):
                sounds.append(make_sound(kind, rng, long=length == "long", name=f"{kind}_{length}_{i:03d}"))
    return sounds
