"""Fine alignment of exact matches: of several recordings that all hold the query, the one it mostly is.

A query recorded with a second library recording playing in the room aligns with both, and landmark votes
follow how peaky a sound is, not how loud. The query's magnitude spectrum, set against each recording's at the
aligned moment, says which of them carries most of its energy (docs/quality.md: a 5 s excerpt with another
recording 10 dB under it, top-1 0.86 -> 0.98 measured outside the system).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from echovids import clip_audio, landmarks
from echovids.audio import decode_window
from echovids.audio_params import SAMPLE_RATE
from echovids.errors import EchovidsError
from echovids.schemas import MatchKind, ShardCandidate

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


def aligned_audio(candidate: ShardCandidate, seconds: float) -> np.ndarray | None:
    """The stored audio of a candidate's clip under the query (zeros where the query overhangs its start)."""
    path = clip_audio.find(candidate.clip_id)
    if path is None:
        return None  # features imported without audio: nothing to compare
    return audio_under(path, candidate, seconds)


def audio_under(path: Path, candidate: ShardCandidate, seconds: float) -> np.ndarray | None:
    """The audio file's ``seconds`` under the query as the candidate aligns it (zeros before the file's start)."""
    start = candidate.match_start_s - candidate.query_start_s  # where the query's first sample sits in the clip
    try:
        samples = decode_window(path, max(0.0, start), seconds + min(0.0, start))
    except EchovidsError:
        return None
    return np.concatenate([np.zeros(round(max(0.0, -start) * SAMPLE_RATE), np.float32), samples])


def settle_exact(
    candidates: list[ShardCandidate],
    query_audio: Callable[[], np.ndarray | None],
    audio_of: Callable[[ShardCandidate, float], np.ndarray | None] = aligned_audio,
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
        audio = audio_of(candidates[i], seconds)
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
