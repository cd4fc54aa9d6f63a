"""Spectral-peak landmarks (Shazam / audfprint style): pairs of peaks hashed with their time.

A recording played back through a speaker, under noise or a codec, keeps most of its strongest
spectral peaks; pairs of them, hashed as (f1, f2 - f1, dt), find the very recording and the offset
inside it to within one 16 ms hop.

A steady sound (a tone, a hum, a slow sweep) has no such peaks: its strongest bins are as loud from one hop to
the next, so which hop is a local maximum is left to noise. Its *steady peaks* are read instead from the mean
spectrum of each 128 ms cell and paired a few cells apart, in the same hash layout with a ``dt`` beyond
``MAX_DT``. They say which clip holds the sound, not where (a steady sound is alike everywhere): the search
passes such clips on for their audio to decide (services/search/verify.py).

A click or a hit has neither: its spectrum is smooth. The moments it starts are hashed instead, as onset pairs
(echovids/onsets.py), from the same spectrogram.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import scipy.fft

from echovids import onsets
from echovids.audio_params import SAMPLE_RATE
from echovids.spectrogram import (
    FLOOR_MAGNITUDE,
    HOP,
    HOP_S,
    N_FFT,
    magnitude_spectrogram,
    running_max,
    strongest_each,
)

PEAK_TIME_RADIUS = 2  # local maximum over +-2 frames ...
PEAK_FREQ_RADIUS = 4  # ... and +-4 bins
PEAKS_PER_SECOND = 30
FAN_OUT = 8  # each peak pairs with the next 8 ...
MAX_DT = 48  # ... within 0.77 s ...
MAX_DF = 40  # ... and +-40 bins
QUERY_SHIFTS = (0, 64, 128, 192)  # sub-hop shifts of the query, so its frames meet the library's grid
# From this length on, every other shift: a long query has votes to spare, and halves its extraction and match
# (6 s and 10 s excerpts, ESC-10 recordings: the right recording among the exact matches as often; docs/quality.md).
LONG_QUERY_S = 6.0
# Steady peaks: local maxima (+-4 bins) of a cell's mean log spectrum that stand 12 dB above its median (white
# noise at 10 dB under a tone leaves the tone's bin some 30 dB above it), the 2 strongest per cell (3 found no more
# on the synthetic suite, with twice the postings: docs/quality.md), each paired
# with the peaks 2, 4 and 8 cells later (0.26-1 s: a 2 s query holds several of each) and in its own cell.
STEADY_CELL = 8  # hops (128 ms)
STEADY_RISE = float(np.log(4.0))
STEADY_PEAKS = 2
# Lag 0 pairs the peaks of one cell (a lone tone's peak with itself): a sound of 0.25 s holds one whole cell.
STEADY_LAGS = (2, 4, 8, 0)  # cells
STEADY_DT = MAX_DT + 1  # the dt field of a steady pair is STEADY_DT + its lag's index: never a peak pair's
# A steady hash is kept once per second it recurs in: an hour of mains hum must not fill a posting list, and
# one a second still names the clip.
STEADY_ONCE_FRAMES = STEADY_CELL * 8
# Fine steady peaks: a hum's or an engine's harmonics lie 40-200 Hz apart, so in 31 Hz bins, +-4 of them, the
# strongest alone stands out, at a bin every low rumble shares (a 61 Hz hum kept only bin 2). Under FINE_TOP_BIN
# (2 kHz), one 2048-point spectrum per cell (7.8 Hz bins, the cell's own samples) gives each harmonic its own
# peak, in a hash family of its own (FINE_FLAG), read as steady pairs are.
FINE_N_FFT = STEADY_CELL * HOP
FINE_TOP_BIN = 256
FINE_FREQ_RADIUS = 2  # +-16 Hz: a 40 Hz hum's harmonics are 5 bins apart
FINE_FLAG = np.uint32(1 << 30)  # peak and steady pairs use 22 bits, onset pairs the top bit
# Fine pairs take the coarse lags: lags 4 and 0 alone halve them (79 -> 40 a second of ESC-10) and lost 2 of 40
# short sounds in context on each tuning seed; lag 0 alone (20 a second) lost more (docs/quality.md).
FINE_LAGS = STEADY_LAGS
_FINE_WINDOW = np.hanning(FINE_N_FFT).astype(np.float32)
DYNAMIC_RANGE = np.log(10**3)  # 60 dB, in the natural-log magnitude units of the spectrogram
ABSOLUTE_FLOOR = np.log(FLOOR_MAGNITUDE)
FINE_ABSOLUTE_FLOOR = np.log(FLOOR_MAGNITUDE * FINE_N_FFT / N_FFT)  # the same level in a longer window's bins


@dataclass
class Landmarks:
    hashes: np.ndarray  # uint32, 22 bits: f1 (9) | df + 40 (7) | dt (6)
    times: np.ndarray  # int32, the first peak's frame (16 ms hops)
    weights: np.ndarray  # float32, the weaker peak's magnitude: a query's loud sound outvotes a quiet one

    def __len__(self) -> int:
        return int(self.hashes.size)


def log_spectrogram(waveform: np.ndarray) -> np.ndarray:
    """[frames, 257] log magnitude (see magnitude_spectrogram)."""
    return _log(magnitude_spectrogram(waveform))


def _log(magnitude: np.ndarray) -> np.ndarray:
    """log_spectrogram's values, written over ``magnitude`` (float32): a block's spectrogram is 4 MB."""
    np.add(magnitude, np.float32(1e-6), out=magnitude)
    return np.log(magnitude, out=magnitude)


def local_max(spec: np.ndarray) -> np.ndarray:
    """The maximum over each cell's +-2 frames x +-4 bins neighbourhood (separable: time, then frequency)."""
    return running_max(running_max(spec, PEAK_TIME_RADIUS, 0), PEAK_FREQ_RADIUS, 1)


def find_peaks(
    spec: np.ndarray, whole: bool = False, context: tuple[int, int] = (0, 0), first_frame: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame, bin, log magnitude) of local maxima: the strongest PEAKS_PER_SECOND in each second, or with
    ``whole`` as many over the whole excerpt (a query: where the sound it holds is loud, the peaks go there).

    For a block of a longer recording (``LandmarkStream``): ``context`` (before, after) frames of ``spec`` are
    its neighbours, only there for the local maxima at its edges; ``first_frame`` is its first own frame's
    place in the recording, which the returned frames count from."""
    before, after = context
    core = spec[before : spec.shape[0] - after]
    if core.shape[0] == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, dtype=np.float32)
    # Peaks must stand above the frame's median (flat noise makes none), within 60 dB of the loudest moment
    # and above -80 dBFS: dither and quantisation noise in a quiet stretch must not fill that second's quota.
    median = np.partition(core, core.shape[1] // 2, axis=1)[:, core.shape[1] // 2 : core.shape[1] // 2 + 1]
    floor = np.maximum(median + 1.0, max(float(core.max()) - DYNAMIC_RANGE, ABSOLUTE_FLOOR))
    is_peak = (core == local_max(spec)[before : spec.shape[0] - after]) & (core > floor)
    is_peak[:, 0] = False  # DC carries offsets, not content
    t, f = np.nonzero(is_peak)
    values = core[t, f]
    t = t + first_frame
    second = (t * HOP_S).astype(np.int64)
    if whole:
        quota = max(PEAKS_PER_SECOND, int(PEAKS_PER_SECOND * spec.shape[0] * HOP_S))
        second = np.zeros_like(second)
    else:
        quota = PEAKS_PER_SECOND
    keep = strongest_each(second, values, quota)
    t, f, values = t[keep], f[keep], values[keep]
    order = np.lexsort((f, t))
    return t[order], f[order], values[order]


def pair_peaks(t: np.ndarray, f: np.ndarray, values: np.ndarray, firsts: int | None = None) -> Landmarks:
    """Hash each peak with up to FAN_OUT later peaks inside the target zone (only the first ``firsts`` peaks
    start a pair when given: the rest are the next block's, there to be paired with)."""
    n = t.size
    if n < 2:
        return Landmarks(np.empty(0, dtype=np.uint32), np.empty(0, dtype=np.int32), np.empty(0, dtype=np.float32))
    reach = min(n - 1, FAN_OUT * 6)  # later peaks to look at before the zone is surely passed
    i = np.arange(n)[:, None]
    j = i + np.arange(1, reach + 1)[None, :]
    inside = j < n
    j = np.minimum(j, n - 1)
    dt = t[j] - t[i]
    df = f[j] - f[i]
    valid = inside & (dt >= 1) & (dt <= MAX_DT) & (np.abs(df) <= MAX_DF)
    valid &= np.cumsum(valid, axis=1) <= FAN_OUT
    if firsts is not None:
        valid[firsts:] = False
    ii, jj = np.nonzero(valid)
    f1 = f[ii].astype(np.uint32)
    hashes = (f1 << 13) | ((df[ii, jj] + MAX_DF).astype(np.uint32) << 6) | dt[ii, jj].astype(np.uint32)
    weights = np.exp(np.minimum(values[ii], values[jj])).astype(np.float32)
    return Landmarks(hashes=hashes, times=t[ii].astype(np.int32), weights=weights)


def steady_peaks(spec: np.ndarray, first_frame: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame, bin, log magnitude) of the steady peaks of whole cells of ``spec`` (a last partial cell is left
    out); ``first_frame``, a multiple of STEADY_CELL, is its first row's place in the recording."""
    cells = spec.shape[0] // STEADY_CELL
    mean = spec[: cells * STEADY_CELL].reshape(cells, STEADY_CELL, -1).mean(axis=1)
    return _strongest_steady(mean, PEAK_FREQ_RADIUS, ABSOLUTE_FLOOR, first_frame)


def _strongest_steady(
    cells: np.ndarray, radius: int, floor: float, first_frame: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame, bin, log magnitude) of the STEADY_PEAKS strongest local maxima (+-``radius`` bins) of each row of
    ``cells`` (a cell's log spectrum) that stand STEADY_RISE above its median and above ``floor``."""
    if cells.shape[0] == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, dtype=np.float32)
    median = np.median(cells, axis=1, keepdims=True)
    # Above -80 dBFS, as a peak pair's peaks: a room's hiss at -80 dB is silence, not a steady sound.
    is_peak = (cells == running_max(cells, radius, 1)) & (cells > np.maximum(median + STEADY_RISE, floor))
    is_peak[:, 0] = False
    rank = np.argsort(np.argsort(-np.where(is_peak, cells, -np.inf), axis=1), axis=1)
    cell, f = np.nonzero(is_peak & (rank < STEADY_PEAKS))
    return first_frame + cell * STEADY_CELL, f, cells[cell, f].astype(np.float32)


def fine_steady_peaks(waveform: np.ndarray, first_cell: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame, fine bin, log magnitude) of the steady peaks under FINE_TOP_BIN of each whole cell of samples
    (FINE_N_FFT each, from cell ``first_cell`` of the recording on), read from one long spectrum per cell."""
    cells = waveform.size // FINE_N_FFT
    frames = np.ascontiguousarray(waveform[: cells * FINE_N_FFT], dtype=np.float32).reshape(cells, FINE_N_FFT)
    spectrum = np.abs(scipy.fft.rfft(frames * _FINE_WINDOW, axis=1)[:, :FINE_TOP_BIN])
    return _strongest_steady(_log(spectrum), FINE_FREQ_RADIUS, FINE_ABSOLUTE_FLOOR, first_cell * STEADY_CELL)


def pair_steady(
    t: np.ndarray,
    f: np.ndarray,
    values: np.ndarray,
    family: np.uint32 = np.uint32(0),
    lags: tuple[int, ...] = STEADY_LAGS,
) -> Landmarks:
    """Each steady peak hashed with every steady peak ``lags`` cells later (within MAX_DF bins); ``family`` is
    or-ed into the hashes (FINE_FLAG for fine steady peaks, with FINE_LAGS)."""
    hashes, times, weights = [], [], []
    cell = t // STEADY_CELL
    for code, lag in enumerate(lags):
        later = np.searchsorted(cell, cell + lag, side="left")
        ends = np.searchsorted(cell, cell + lag, side="right")
        counts = ends - later
        i = np.repeat(np.arange(t.size), counts)
        j = (np.arange(i.size) - np.repeat(np.cumsum(counts) - counts, counts)) + np.repeat(later, counts)
        df = f[j] - f[i]
        keep = np.abs(df) <= MAX_DF
        i, j, df = i[keep], j[keep], df[keep]
        hashes.append(
            family
            | (f[i].astype(np.uint32) << 13)
            | ((df + MAX_DF).astype(np.uint32) << 6)
            | np.uint32(STEADY_DT + code)
        )
        times.append(t[i].astype(np.int32))
        weights.append(np.exp(np.minimum(values[i], values[j])).astype(np.float32))
    marks = Landmarks(np.concatenate(hashes), np.concatenate(times), np.concatenate(weights))
    bucket = (marks.hashes.astype(np.uint64) << 32) | (marks.times // STEADY_ONCE_FRAMES).astype(np.uint64)
    _, first = np.unique(bucket, return_index=True)
    first.sort()
    return Landmarks(marks.hashes[first], marks.times[first], marks.weights[first])


def is_steady(hashes: np.ndarray) -> np.ndarray:
    """Which hashes are steady pairs (their dt field beyond MAX_DT)."""
    return ((hashes & np.uint32(63)) >= STEADY_DT) & ~onsets.is_onset(hashes)


def _joined(parts: list[Landmarks]) -> Landmarks:
    return Landmarks(
        hashes=np.concatenate([p.hashes for p in parts]),
        times=np.concatenate([p.times for p in parts]),
        weights=np.concatenate([p.weights for p in parts]),
    )


def extract(waveform: np.ndarray, whole: bool = False) -> Landmarks:
    """Landmarks of a library recording (or, with ``whole``, of a query excerpt): peak pairs, steady pairs, fine
    steady pairs, then onset pairs (echovids/onsets.py)."""
    magnitude = magnitude_spectrogram(waveform)
    onset_pairs = Landmarks(*onsets.onset_pairs(*onsets.rises(onsets.band_energies(magnitude))))
    spec = _log(magnitude)
    fine = pair_steady(*fine_steady_peaks(waveform), family=FINE_FLAG, lags=FINE_LAGS)
    return _joined([pair_peaks(*find_peaks(spec, whole=whole)), pair_steady(*steady_peaks(spec)), fine, onset_pairs])


# A long recording's landmarks are taken a block at a time: 60 s of spectrogram (4 MB), whole seconds.
STREAM_BLOCK_FRAMES = 3750


class LandmarkStream:
    """``extract`` of a recording fed in chunks of samples, in memory bounded by one block, not its length.

    With ``weights`` off, the landmarks' weights are left empty (a library recording's are never read).

    A block's peaks stand within 60 dB of its own loudest moment (not the whole recording's), so a recording
    longer than one block may get more peaks in its quiet stretches than ``extract`` gives it; one block long
    or shorter, the landmarks are ``extract``'s exactly. Pairs reach across block boundaries.
    """

    def __init__(self, block_frames: int = STREAM_BLOCK_FRAMES, weights: bool = True) -> None:
        self.block_frames = block_frames
        self.weights = weights  # a library clip's are never read: without them, a third less to keep
        self._samples = np.zeros(0, dtype=np.float32)  # from frame ``self._buffer_frame`` on
        self._buffer_frame = 0
        self._next = 0  # the first frame not yet searched for peaks
        self._held: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # the last block's peaks
        self._parts: list[Landmarks] = []
        self._steady_rows = np.zeros((0, N_FFT // 2 + 1), dtype=np.float32)  # a cell begun, from _steady_frame on
        self._steady_frame = 0
        self._steady: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        # Each frame's onset rise and code (5 bytes a 16 ms hop): onsets are picked over the whole recording at
        # its end, as ``extract`` picks them.
        self._rises: list[tuple[np.ndarray, np.ndarray]] = []
        self._fine_samples = np.zeros(0, dtype=np.float32)  # a fine cell begun, cell ``self._fine_cell``
        self._fine_cell = 0
        self._fine: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def feed(self, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk, dtype=np.float32)
        self._samples = np.concatenate([self._samples, chunk])
        self._fine_samples = np.concatenate([self._fine_samples, chunk])
        whole = self._fine_samples.size // FINE_N_FFT
        if whole:
            self._fine.append(fine_steady_peaks(self._fine_samples[: whole * FINE_N_FFT], self._fine_cell))
            self._fine_samples, self._fine_cell = self._fine_samples[whole * FINE_N_FFT :], self._fine_cell + whole
        while True:
            end = self._block_end(self._next + self.block_frames)
            # The block's frames, PEAK_TIME_RADIUS more (its right context) and their samples must be here.
            needed = (end + PEAK_TIME_RADIUS - self._buffer_frame - 1) * HOP + N_FFT
            if self._samples.size < needed:
                return
            self._block(end, final=False)

    def finish(self) -> Landmarks:
        available = self._buffer_frame + (1 + (self._samples.size - N_FFT) // HOP if self._samples.size >= N_FFT else 0)
        if available > self._next or self._held is not None:
            self._block(max(available, self._next), final=True)
        parts = self._parts or [Landmarks(np.empty(0, np.uint32), np.empty(0, np.int32), np.empty(0, np.float32))]
        if self._steady:
            self._keep(pair_steady(*_columns(self._steady)))
        if self._fine:
            self._keep(pair_steady(*_columns(self._fine), family=FINE_FLAG, lags=FINE_LAGS))
        if self._rises:
            rise, codes = (np.concatenate(column) for column in zip(*self._rises, strict=True))
            self._keep(Landmarks(*onsets.onset_pairs(rise, codes)))
        return _joined(parts)

    def _keep(self, part: Landmarks) -> None:
        self._parts.append(part if self.weights else Landmarks(part.hashes, part.times, np.empty(0, np.float32)))

    @staticmethod
    def _block_end(frame: int) -> int:
        """The first frame of a second at or after ``frame``: a second's quota is never split between blocks."""
        while int(frame * HOP_S) == int((frame - 1) * HOP_S):
            frame += 1
        return frame

    def _block(self, end: int, final: bool) -> None:
        start = self._next
        lo = max(0, start - PEAK_TIME_RADIUS)
        offset = (lo - self._buffer_frame) * HOP
        hi = end if final else end + PEAK_TIME_RADIUS
        samples = self._samples[offset : offset + (hi - lo - 1) * HOP + N_FFT]
        magnitude = magnitude_spectrogram(samples) if hi > lo else None
        if magnitude is not None and magnitude.shape[0]:
            # The block's left context (PEAK_TIME_RADIUS frames, LAG of them) is its first frames' past.
            self._rises.append(onsets.rises(onsets.band_energies(magnitude[: end - lo]), past=start - lo))
            spec = _log(magnitude)
            peaks = find_peaks(spec, context=(start - lo, spec.shape[0] - (end - lo)), first_frame=start)
            self._steady_block(spec[start - lo : end - lo])
        else:
            peaks = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))
        if self._held is not None:
            # The last block's peaks pair with this block's too (MAX_DT is far less than a block).
            held = self._held[0].size
            joined = [np.concatenate([a, b]) for a, b in zip(self._held, peaks, strict=True)]
            self._keep(pair_peaks(joined[0], joined[1], joined[2], firsts=held))
        self._held = None if final else peaks
        if final:
            self._keep(pair_peaks(*peaks))
        self._next = end
        keep_from = max(0, end - PEAK_TIME_RADIUS)  # the next block's left context
        self._samples = self._samples[(keep_from - self._buffer_frame) * HOP :]
        self._buffer_frame = keep_from

    def _steady_block(self, rows: np.ndarray) -> None:
        rows = np.concatenate([self._steady_rows, rows])
        whole = rows.shape[0] // STEADY_CELL * STEADY_CELL
        self._steady.append(steady_peaks(rows[:whole], first_frame=self._steady_frame))
        self._steady_rows, self._steady_frame = rows[whole:], self._steady_frame + whole


def _columns(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame, bin, value) parts of a recording, joined."""
    t, f, v = (np.concatenate(column) for column in zip(*parts, strict=True))
    return t, f, v


def extract_stream(chunks: Iterable[np.ndarray], block_frames: int = STREAM_BLOCK_FRAMES) -> Landmarks:
    stream = LandmarkStream(block_frames)
    for chunk in chunks:
        stream.feed(chunk)
    return stream.finish()


def extract_query(waveform: np.ndarray) -> Landmarks:
    """Landmarks of a query at several sub-hop shifts (union; a repeated one keeps its largest weight)."""
    shifts = QUERY_SHIFTS if waveform.size < LONG_QUERY_S * SAMPLE_RATE else QUERY_SHIFTS[::2]
    joined = _joined([extract(waveform[shift:], whole=True) for shift in shifts if waveform.size > shift])
    onset = onsets.is_onset(joined.hashes)
    widened = Landmarks(*onsets.widen(joined.hashes[onset], joined.times[onset], joined.weights[onset]))
    joined = _joined([Landmarks(joined.hashes[~onset], joined.times[~onset], joined.weights[~onset]), widened])
    hashes, times, weights = joined.hashes, joined.times, joined.weights
    packed = (hashes.astype(np.uint64) << 32) | times.astype(np.uint64)
    order = np.lexsort((-weights, packed))
    first = np.ones(order.size, dtype=bool)
    first[1:] = packed[order][1:] != packed[order][:-1]
    keep = order[first]
    hashes, times, weights = hashes[keep], times[keep], weights[keep]
    # Each family's weights against its own loudest: a peak's magnitude and an onset's rise are not one scale.
    onset = onsets.is_onset(hashes)
    for family in (onset, ~onset):
        if family.any():
            weights[family] /= float(weights[family].max()) or 1.0
    return Landmarks(hashes=hashes, times=times, weights=weights)
