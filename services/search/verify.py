"""The last word on exact matches, from the audio itself: which candidates hold the query, where, and how often.

- **Waveform verification** (:func:`check_waveforms`, :func:`apply_fits`): the leading candidates of both
  indexes, exact or similar, are set against their stored audio by normalised cross-correlation. A copy of the
  query, even under noise or another recording 10 dB down, keeps most of its correlation wherever the fingerprint
  fails it (a steady tone hashes alike at every moment; a periodic sound aligns at many offsets); an unrelated
  sound keeps almost none. The peak names the clip as exact and gives the moment to the sample; a match that
  repeats (several peaks alike) gives its ``period_s``; a clip that holds the query under other sound leads the
  similar ones, at that moment.
- **Spectral fit** (:func:`settle_exact`), when no candidate's audio verifies (a reverberant or re-encoded query
  keeps its landmarks but not its waveform): of several recordings that all hold the query, the one it mostly is.
  Landmark votes follow how peaky a sound is, not how loud; the magnitude spectrum at the aligned moment says
  which recording carries most of the query's energy (docs/quality.md).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft
import scipy.signal

from echovids import clip_audio, landmarks
from echovids.audio import decode_window
from echovids.audio_params import SAMPLE_RATE
from echovids.errors import EchovidsError
from echovids.schemas import MatchKind, ShardCandidate
from echovids.settings import get_settings

_readers = ThreadPoolExecutor(4, thread_name_prefix="verify-read")

# (clip id, start s, seconds) -> that stretch of the clip's stored audio (from max(0, start); shorter at its end),
# or None when the clip has no stored audio.
WindowOf = Callable[[str, float, float], "np.ndarray | None"]

# Exact matches weighed against each other: the interferer of a noisy query is nearly always in the top 3.
DEPTH = 3
# An exact match with under this share of the strongest one's landmark weight is a chance alignment (a clock's
# ticks line up with any periodic sound now and then): on ESC-10, a clip's chance matches with clips of other
# classes weigh at most 0.12 of its own (median 0.03); a recording under another at 10 dB, under 0.1 of the
# other in about 1 query of 80 (docs/quality.md).
CHANCE_SHARE = 0.1


def spectral_fit(query: np.ndarray, library: np.ndarray) -> float:
    """Cosine similarity of two waveforms' linear magnitude spectrograms (the library's cut or padded to the query).

    Linear, not log: the louder source owns most of the query's energy, and a log spectrum would weigh the quiet
    one's peaks as much.
    """
    library = np.pad(library[: query.size], (0, max(0, query.size - library.size)))
    q = landmarks.magnitude_spectrogram(query)
    lib = landmarks.magnitude_spectrogram(library)
    norm = float(np.linalg.norm(q) * np.linalg.norm(lib))
    return float(np.einsum("ij,ij->", q, lib) / norm) if norm > 0 else 0.0


def file_window(path: Path, start_s: float, seconds: float) -> np.ndarray | None:
    """``seconds`` of an audio file from ``max(0, start_s)`` on; None when it cannot be read."""
    try:
        return decode_window(path, max(0.0, start_s), seconds + min(0.0, start_s))
    except EchovidsError:
        return None


def stored_window(clip_id: str, start_s: float, seconds: float) -> np.ndarray | None:
    """A stretch of a clip's stored audio (the library's :data:`WindowOf`)."""
    path = clip_audio.find(clip_id)
    return None if path is None else file_window(path, start_s, seconds)  # None: features imported without audio


def aligned_audio(window_of: WindowOf, candidate: ShardCandidate, seconds: float) -> np.ndarray | None:
    """A candidate's clip audio under the query as it aligns them (zeros where the query overhangs its start)."""
    start = candidate.match_start_s - candidate.query_start_s  # where the query's first sample sits in the clip
    samples = window_of(candidate.clip_id, start, seconds)
    if samples is None:
        return None
    return np.concatenate([np.zeros(round(max(0.0, -start) * SAMPLE_RATE), np.float32), samples])


# -- waveform verification ----------------------------------------------------------------------------------------
# Candidates verified first, per query: the ranked list's head (an exact landmark match, or the most similar
# clips), the other exact landmark matches, and the fingerprint's best guesses among the rest (``recheck``:
# each shard's first, then its second, ...).
VERIFY_DEPTH = 2
VERIFY_EXACT = 4  # exact landmark matches beyond the head (several recordings hold the query: rarely more)
VERIFY_RECHECKS = 3
# A short query's shard passes on more places of each list (query.SHORT_RECHECKS, four lists): the merge verifies
# this many of them, after the budget below.
SHORT_VERIFY_RECHECKS = 32
# Then, for a query of a frame or two (a click among clicks: all alike to the embedding), the rest in rank order
# until this much of their audio has been read. A longer query's embedding ranks well enough without.
SHORT_QUERY_S = 1.5
VERIFY_BUDGET_S = 40.0
# Seconds of a candidate's audio searched on each side of where it aligns the query (the cost of a check grows
# with it): an exact landmark match places the query to a hop (16 ms), an embedding match to a frame or two (0.48 s
# each) or a periodic sound's landmarks to one of its repeats, and a steady sound's share of a clip not at all.
WINDOW_EXACT_S = 0.25
WINDOW_SIMILAR_S = 2.0
WINDOW_ANYWHERE_S = 10.0
# A candidate the embedding aligns at one moment and a fingerprint at another is read once across both when they
# lie this close, and as two windows when further apart (a long recording's far moments would make one long read).
JOINED_WINDOWS_S = 20.0
# The peak correlation of an exact copy: a copy under noise at S dB keeps sqrt(1 / (1 + 10^(-S/10))), 0.95 at
# 10 dB and 0.71 at 3 dB; a sound that is not the query keeps little (docs/quality.md gives the measured spread).
EXACT_CORRELATION = 0.75
UNMISTAKABLE = 0.9  # a copy under 10 dB of noise or less: once one is found, only the exact matches are checked
# From this on, a candidate holds the query in part (under other sound at about 0 dB or louder); unrelated sounds
# keep at most 0.22 (docs/quality.md).
PARTIAL_CORRELATION = 0.35
# Under this, an exact landmark match is chance: unrelated sounds keep up to 0.22 (two sweeps through the same
# pitches align their landmarks and not their waveforms), a copy band-limited to 300-3400 Hz 0.2-1.0 and one
# under 0.4 s of reverb 0.24-0.86 (ESC-10 excerpts): the few copies below it still rank by score (docs/quality.md).
CHANCE_CORRELATION = 0.25
# A match repeats when other peaks, this close to the best and standing out of the curve, lie at least
# MIN_PERIOD_S away (a tone's cycles are one sound, not a repeat).
REPEAT_SHARE = 0.9
REPEAT_PROMINENCE = 0.1
MIN_PERIOD_S = 0.05
PROFILE_BIN_S = 0.01  # the correlation curve is read in 10 ms bins for repeats (its finer ripple is a tone's cycle)


@dataclass(frozen=True)
class WaveformFit:
    correlation: float  # the peak normalised cross-correlation, in [-1, 1]
    start_s: float  # where the query's first sample lies, from the window's start (may be negative)
    period_s: float | None  # the spacing of the match's repeats, when it repeats


class QuerySpectra:
    """A query, reversed, and its spectra at the FFT lengths used so far: one query meets many windows."""

    def __init__(self, query: np.ndarray) -> None:
        self.size = query.size
        self.reversed = np.ascontiguousarray(query[::-1], dtype=np.float32)
        self.norm = float(np.linalg.norm(self.reversed))
        self._spectra: dict[int, np.ndarray] = {}

    def spectrum(self, length: int) -> np.ndarray:
        if length not in self._spectra:
            self._spectra[length] = scipy.fft.rfft(self.reversed, length)
        return self._spectra[length]


def _fft_length(size: int) -> int:
    """The least of 2^k, 1.25 * 2^k and 1.5 * 2^k at or above ``size``: few lengths, so windows of about one
    size share the query's spectrum (at most a quarter more work per transform)."""
    octave = 1 << max(0, (size - 1).bit_length() - 1)
    return next(length for length in (octave, octave * 5 // 4, octave * 3 // 2, octave * 2) if length >= size)


def waveform_fit(query: np.ndarray | QuerySpectra, audio: np.ndarray) -> WaveformFit | None:
    """The query's best alignment against ``audio`` by normalised cross-correlation, overhangs allowed.

    Every placement is scored, from the query ending at the audio's first sample to starting at its last; each
    by the cosine of the query and the audio under it (zeros beyond the audio), so a short sound inside a long
    query, or a short query inside a long clip, both score as what they share.
    """
    spectra = query if isinstance(query, QuerySpectra) else QuerySpectra(query)
    n, m = spectra.size, audio.size
    if n == 0 or m == 0 or spectra.norm == 0.0:
        return None
    samples = np.asarray(audio, dtype=np.float32)
    length = _fft_length(m + n - 1)
    # The full convolution with the reversed query: placement p (the query's first sample at audio sample p,
    # from -(n - 1) to m - 1) is its entry p + n - 1.
    dots = scipy.fft.irfft(scipy.fft.rfft(samples, length) * spectra.spectrum(length), length)[: m + n - 1]
    energy = np.concatenate([[0.0], np.cumsum(np.square(samples, dtype=np.float64))])
    # The energy under placement p, energy[min(m, p + n)] - energy[max(0, p)], from slices (float64: a quiet
    # window is a small difference of large sums).
    under = np.concatenate([energy[1:], np.full(n - 1, energy[m])]) - np.concatenate([np.zeros(n - 1), energy[:m]])
    norms = np.sqrt(np.maximum(under, 0.0)).astype(np.float32)
    # Only audio that sounds counts: under the silence level a window's few bits of dither divide the FFT's
    # rounding into anything, and a placement that is mostly overhang is no evidence.
    silent_rms = 10 ** (get_settings().silence_dbfs / 20)  # the level under which the embedder mutes a frame
    norms[norms <= np.sqrt(n) * silent_rms] = np.inf
    ncc = dots / (norms * np.float32(spectra.norm))
    best = int(np.argmax(ncc))
    peak = float(ncc[best])
    period = _period(ncc, peak) if peak >= EXACT_CORRELATION else None  # only an exact match says it
    return WaveformFit(peak, (best - (n - 1)) / SAMPLE_RATE, period)


def _period(ncc: np.ndarray, peak: float) -> float | None:
    bin_ = max(1, round(PROFILE_BIN_S * SAMPLE_RATE))
    profile = ncc[: ncc.size // bin_ * bin_].reshape(-1, bin_).max(axis=1)
    peaks, _ = scipy.signal.find_peaks(
        profile,
        height=REPEAT_SHARE * peak,
        prominence=REPEAT_PROMINENCE * peak,
        distance=max(1, round(MIN_PERIOD_S / PROFILE_BIN_S)),
    )
    if peaks.size < 2:
        return None
    return round(float(np.median(np.diff(peaks))) * PROFILE_BIN_S, 3)


def to_verify(candidates: list[ShardCandidate], rechecks: int = VERIFY_RECHECKS) -> list[int]:
    """The positions of the candidates worth their audio's decoding: the head, the other exact landmark matches,
    then the best ``rechecks`` rechecks."""
    head = list(range(min(VERIFY_DEPTH, len(candidates))))
    # The exact landmark matches are checked: one left unchecked would lead the list once those above it
    # were shown to be chance.
    exact = [i for i, c in enumerate(candidates) if c.match == MatchKind.exact and i >= VERIFY_DEPTH]
    flagged = sorted(
        (i for i, c in enumerate(candidates) if c.recheck is not None and i >= VERIFY_DEPTH),
        key=lambda i: (candidates[i].recheck, -candidates[i].votes),
    )
    return head + exact[:VERIFY_EXACT] + [i for i in flagged if i not in exact][:rechecks]


def window_s(candidate: ShardCandidate) -> float:
    """How far from where it aligns the query a candidate's audio is searched (by what aligned it)."""
    if candidate.anywhere:
        return WINDOW_ANYWHERE_S
    return WINDOW_EXACT_S if candidate.match == MatchKind.exact else WINDOW_SIMILAR_S


def check_waveforms(
    candidates: list[ShardCandidate], query: np.ndarray, window_of: WindowOf
) -> dict[int, WaveformFit | None]:
    """Each checked candidate's best fit with the query (by position; None: its audio is silent there).

    In three rounds: the exact landmark matches (the cheap ones: a hop tells where); the head's similar ones
    and the rechecks, unless the first round found the copy unmistakably; then, for a short query, the
    rest in rank order until VERIFY_BUDGET_S of audio has been read, and its deeper rechecks
    (SHORT_VERIFY_RECHECKS). A clip without stored audio is left out.
    """
    spectra = QuerySpectra(query)
    first = to_verify(candidates)
    exact = [i for i in first if candidates[i].match == MatchKind.exact]
    fits = _fit_all(candidates, exact, spectra, window_of)
    if any(f is not None and f.correlation >= UNMISTAKABLE for f, _ in fits.values()):
        return {i: f for i, (f, _) in fits.items()}  # the rest could only add chance
    fits |= _fit_all(candidates, [i for i in first if i not in fits], spectra, window_of)
    if spectra.size > SHORT_QUERY_S * SAMPLE_RATE:
        return {i: f for i, (f, _) in fits.items()}
    budget = VERIFY_BUDGET_S * SAMPLE_RATE - sum(size for _, size in fits.values())
    for i in range(len(candidates)):
        if budget <= 0:
            break
        if i not in fits and i not in first:
            fits |= _fit_all(candidates, [i], spectra, window_of)
            budget -= fits[i][1] if i in fits else 0
    # Then the deeper places a shard passes on for a short query, beyond the budget: they are not the embedding's
    # order, which the budget follows (a short sound among short clips).
    deeper = [i for i in to_verify(candidates, SHORT_VERIFY_RECHECKS) if i not in fits]
    fits |= _fit_all(candidates, deeper, spectra, window_of)
    return {i: f for i, (f, _) in fits.items()}


def _fit_all(
    candidates: list[ShardCandidate], positions: list[int], spectra: QuerySpectra, window_of: WindowOf
) -> dict[int, tuple[WaveformFit | None, int]]:
    """(fit, samples read) of the candidates at ``positions`` that have stored audio."""

    def spans(candidate: ShardCandidate) -> list[tuple[float, float]]:
        """(start, seconds) of the stretches to read: around where the match aligns the query, and where a
        fingerprint does; one stretch when the two lie near, two short ones when far apart."""
        around, length = window_s(candidate), spectra.size / SAMPLE_RATE
        at = [candidate.match_start_s - candidate.query_start_s]
        if candidate.recheck_at_s is not None:
            at.append(candidate.recheck_at_s)
        groups = [at] if max(at) - min(at) <= JOINED_WINDOWS_S else [[a] for a in at]
        return [(max(0.0, min(g) - around), max(g) - min(g) + length + 2 * around) for g in groups]

    def read(i: int) -> list[tuple[float, np.ndarray | None]]:
        return [(lead, window_of(candidates[i].clip_id, lead, seconds)) for lead, seconds in spans(candidates[i])]

    fits: dict[int, tuple[WaveformFit | None, int]] = {}
    # The windows are read side by side: a stored file other than WAV is read by an ffmpeg process each.
    for i, windows in zip(positions, _readers.map(read, positions), strict=True):
        for lead, audio in windows:
            if audio is None:
                continue
            found = waveform_fit(spectra, audio)
            placed = None if found is None else WaveformFit(found.correlation, lead + found.start_s, found.period_s)
            best, size = fits.get(i, (None, 0))
            if best is None or (placed is not None and placed.correlation > best.correlation):
                best = placed
            fits[i] = (best, size + audio.size)
    return fits


def _placed(candidate: ShardCandidate, fit: WaveformFit, match: MatchKind) -> ShardCandidate:
    """The candidate at the offset its waveform fits the query, at the query moment the index matched (where
    the query holds two sounds, the one this clip holds), never before the clip's start."""
    query_start = max(candidate.query_start_s, -fit.start_s, 0.0)
    return candidate.model_copy(
        update={
            "match": match,
            "match_start_s": fit.start_s + query_start,
            "query_start_s": query_start,
            "correlation": round(fit.correlation, 4),
            "period_s": fit.period_s if match == MatchKind.exact else None,
        }
    )


def apply_fits(
    candidates: list[ShardCandidate], fits: dict[int, WaveformFit | None]
) -> tuple[list[ShardCandidate], list[ShardCandidate], list[ShardCandidate]]:
    """The candidates as (verified exact, best-correlated first; held in part, likewise; the rest, in order).

    Verified: the query's waveform is in the clip. Held in part: much of it is, under other sound (a short sound
    mixed into a longer recording), so it goes first among the similar ones, at that moment. Of the rest, an
    exact landmark match whose audio shares next to nothing with the query is chance, and becomes similar (an
    engine's harmonics line up with a hum's); one that shares some may be a copy band-limited or reverberant, and
    stays exact.
    """
    verified, partial, rest = [], [], []
    for i, candidate in enumerate(candidates):
        fit = fits.get(i)
        if fit is not None and fit.correlation >= EXACT_CORRELATION:
            verified.append(_placed(candidate, fit, MatchKind.exact))
        elif fit is not None and fit.correlation >= PARTIAL_CORRELATION:
            partial.append(_placed(candidate, fit, MatchKind.similar))
        else:
            chance = i in fits and candidate.match == MatchKind.exact
            chance = chance and (fit is None or fit.correlation < CHANCE_CORRELATION)
            rest.append(candidate.model_copy(update={"match": MatchKind.similar}) if chance else candidate)
    by_fit = lambda c: -(c.correlation or 0.0)  # noqa: E731
    return sorted(verified, key=by_fit), sorted(partial, key=by_fit), rest


def settle_exact(
    candidates: list[ShardCandidate],
    query_audio: Callable[[], np.ndarray | None],
    window_of: WindowOf = stored_window,
) -> list[ShardCandidate]:
    """Reorder the leading exact matches by spectral fit when there are several (ranked list in, ranked list out).

    Candidates whose audio is not at hand keep their places; ``query_audio`` is called only when needed.
    """
    slots = [i for i, c in enumerate(candidates[:DEPTH]) if c.match == MatchKind.exact]
    if len(slots) < 2:
        return candidates
    query = query_audio()
    if query is None or query.size == 0:
        return candidates
    seconds = query.size / SAMPLE_RATE
    fits = {}
    for i in slots:
        audio = aligned_audio(window_of, candidates[i], seconds)
        if audio is not None:
            fits[i] = spectral_fit(query, audio)
    if len(fits) < 2:
        return candidates
    reordered = list(candidates)
    for slot, i in zip(sorted(fits), sorted(fits, key=lambda i: -fits[i]), strict=True):
        reordered[slot] = candidates[i]
    return reordered


def demote_chance_exact(candidates: list[ShardCandidate]) -> list[ShardCandidate]:
    """Exact matches far weaker than the strongest become similar ones, ranked by score among the rest.

    The leading exact match (after :func:`settle_exact`) always stays: it is the best evidence there is.
    """
    exact = [i for i, c in enumerate(candidates) if c.match == MatchKind.exact]
    if len(exact) < 2:
        return candidates
    strongest = max(candidates[i].votes for i in exact)
    weak = {i for i in exact[1:] if candidates[i].votes < CHANCE_SHARE * strongest}
    if not weak:
        return candidates
    kept = [candidates[i] for i in exact if i not in weak]
    rest = [
        candidates[i].model_copy(update={"match": MatchKind.similar}) if i in weak else candidates[i]
        for i in range(len(candidates))
        if i in weak or candidates[i].match != MatchKind.exact
    ]
    return kept + sorted(rest, key=lambda c: -c.score)
