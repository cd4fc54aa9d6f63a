"""Onset pairs: the moments a sound starts, each hashed with the next few and the time between them.

A click, a knock or a shot is a burst of noise a few milliseconds long. Its spectrum is smooth, so it has few
spectral peaks that stand out (a train of 26 clicks gives 2 peak pairs in 6 s, echovids/landmarks.py), yet *when*
it starts is the clearest thing about it, under noise too: white noise at 10 dB under a sparse click train's mean
level lies some 20 dB under each click. An onset is a frame where the energy of many bands jumps; its code is
the band that is loudest there; an onset is paired with the next ``FAN_OUT`` and hashed as (code, code, dt), in a
hash family of its own (``FLAG``), stored and matched in time as peak pairs are (docs/quality.md, "How it
works"), from the landmarks' own spectrogram (echovids/spectrogram.py).

A periodic train hashes alike at each repeat, so its matches say which clip more than where: the search passes
its best ones on for their audio to decide, as it does for steady sounds (services/search/query.py).
"""

from __future__ import annotations

import numpy as np

from echovids.spectrogram import FLOOR_MAGNITUDE, HOP_S, N_FFT, running_max, strongest_each

# 16 bands spaced evenly in log frequency from 94 Hz (bin 3) to 8 kHz (the last bin, as np.add.reduceat needs): a
# hum's rumble under them is not an onset.
BAND_EDGES = np.unique(np.round(np.geomspace(3, N_FFT // 2 + 1, 17)).astype(np.int64))
# A band's energy is read no lower than the fingerprints' floor in each of its bins: in digital silence, a rise
# from nothing is not a rise of 200 dB.
FLOOR_ENERGY = FLOOR_MAGNITUDE**2
# The rise is read against the frame LAG hops earlier: a click inside the 32 ms window shows over two frames.
LAG = 2
# Summed over the bands, in natural log units (20 is 87 dB in all: about 5 dB in each band): under white noise
# the sum of the bands' chance rises is 4-5, a click or a hit 10 dB over it rises 70-100.
MIN_RISE = 20.0
RADIUS = 2  # an onset is the largest rise over +-2 hops (onsets at least 48 ms apart)
PER_SECOND = 12  # the strongest onsets of each second
FAN_OUT = 3  # each onset pairs with the next 3 ...
MAX_DT = 127  # ... within 2 s (hits come 0.3-1.5 s apart); the dt field's 7 bits
FLAG = np.uint32(1 << 31)  # peak and steady pairs use 22 bits: the top bit names this family


def band_energies(magnitude: np.ndarray) -> np.ndarray:
    """[frames, bands] log energy of a magnitude spectrogram's bands, floored (see FLOOR_ENERGY)."""
    energy = np.add.reduceat(np.square(magnitude, dtype=np.float32), BAND_EDGES[:-1], axis=1)
    return np.log(np.maximum(energy, FLOOR_ENERGY * np.diff(BAND_EDGES))).astype(np.float32)


def rises(bands: np.ndarray, past: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rise, code) of each frame of ``bands[past:]``: the summed rise of its bands over the frame LAG hops
    earlier, and its loudest band. The first ``past`` rows are the frames before (a stream's block's context);
    a frame with fewer than LAG before it rises by nothing (a query's start is not an onset)."""
    rise = np.zeros(bands.shape[0] - past, dtype=np.float32)
    first = max(past, LAG)
    if bands.shape[0] > first:
        rise[first - past :] = np.maximum(bands[first:] - bands[first - LAG : -LAG], 0.0).sum(axis=1)
    return rise, np.argmax(bands[past:], axis=1).astype(np.uint8)


def pick(rise: np.ndarray) -> np.ndarray:
    """The frames that are onsets: a rise of MIN_RISE or more, the largest within RADIUS, the strongest
    PER_SECOND of each second."""
    frames = np.flatnonzero((rise >= MIN_RISE) & (rise == running_max(rise[:, None], RADIUS, 0)[:, 0]))
    return np.sort(frames[strongest_each((frames * HOP_S).astype(np.int64), rise[frames], PER_SECOND)])


def pair(frames: np.ndarray, codes: np.ndarray, strength: np.ndarray) -> tuple[np.ndarray, ...]:
    """(hashes, times, weights) of each onset with the next FAN_OUT within MAX_DT; ``codes`` and ``strength``
    are the onsets' own (the weaker rise of a pair weighs it, as the weaker peak weighs a peak pair)."""
    n = frames.size
    if n < 2:
        return np.empty(0, np.uint32), np.empty(0, np.int32), np.empty(0, np.float32)
    i = np.repeat(np.arange(n), FAN_OUT)
    j = i + np.tile(np.arange(1, FAN_OUT + 1), n)
    inside = j < n
    i, j = i[inside], j[inside]
    dt = frames[j] - frames[i]
    keep = (dt >= 1) & (dt <= MAX_DT)
    i, j, dt = i[keep], j[keep], dt[keep]
    hashes = FLAG | (codes[i].astype(np.uint32) << 11) | (codes[j].astype(np.uint32) << 7) | dt.astype(np.uint32)
    return hashes, frames[i].astype(np.int32), np.minimum(strength[i], strength[j]).astype(np.float32)


def widen(hashes: np.ndarray, times: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, ...]:
    """A query's onset pairs, each also with its dt one hop shorter and longer: an onset's frame is the nearer
    of two 16 ms hops, so a pair of the library may be a hop apart from the query's, and a few pairs have none
    to spare."""
    dt = (hashes & np.uint32(MAX_DT)).astype(np.int64)
    out = [(hashes, times, weights)]
    for step in (-1, 1):
        ok = (dt + step >= 1) & (dt + step <= MAX_DT)
        shifted = (hashes[ok] & ~np.uint32(MAX_DT)) | (dt[ok] + step).astype(np.uint32)
        out.append((shifted, times[ok], weights[ok]))
    return tuple(np.concatenate(column) for column in zip(*out, strict=True))


def onset_pairs(rise: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, ...]:
    """(hashes, times, weights) of a recording's onset pairs from its frames' rises and codes."""
    frames = pick(rise)
    return pair(frames, codes[frames], rise[frames])


def is_onset(hashes: np.ndarray) -> np.ndarray:
    return (hashes & FLAG) != 0
