"""Time-aligned matching: frame neighbours vote on (clip, offset); the best pairs are re-scored on the diagonal."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class Match:
    clip: int  # the clip's position in the shard
    offset: int  # library frame index minus query frame index, in hops
    query_start: int  # first query frame that took part in the match
    votes: float
    score: float


def vote(
    neighbour_rows: np.ndarray,
    neighbour_sims: np.ndarray,
    row_clip: np.ndarray,
    row_frame: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum similarities per (clip, offset) with a tolerance of one hop.

    Returns parallel arrays (clip, offset, votes), one entry per voted pair.
    Negative similarities are no evidence and cast no vote.
    """
    m, n = neighbour_rows.shape
    valid = (neighbour_rows >= 0) & (neighbour_sims > 0)
    q_index = np.broadcast_to(np.arange(m)[:, None], (m, n))[valid]
    rows = neighbour_rows[valid]
    sims = neighbour_sims[valid].astype(np.float64)
    if rows.size == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0)
    clips = row_clip[rows].astype(np.int64)
    offsets = row_frame[rows].astype(np.int64) - q_index
    # A query frame may hit several frames of one clip: each (query frame, clip, offset) counts once.
    span = int(m) + int(row_frame.max(initial=0)) + 2
    keys = (clips * span + (offsets + m)) * m + q_index
    order = np.lexsort((-sims, keys))
    keys, sims = keys[order], sims[order]
    first = np.ones(keys.size, dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    pair = keys[first] // m
    pair_sims = sims[first]
    uniq, inverse = np.unique(pair, return_inverse=True)
    votes = np.bincount(inverse, weights=pair_sims)
    # One hop of tolerance: neighbours on either side of an offset add half their weight.
    smoothed = votes + 0.5 * (neighbour_values(uniq, votes, -1) + neighbour_values(uniq, votes, 1))
    return uniq // span, uniq % span - m, smoothed


def neighbour_values(keys: np.ndarray, values: np.ndarray, step: int) -> np.ndarray:
    """For each sorted key, the value at key + step (0 where absent)."""
    at = np.searchsorted(keys, keys + step)
    clipped = np.minimum(at, keys.size - 1)
    return np.where((at < keys.size) & (keys[clipped] == keys + step), values[clipped], 0.0)


def best_per_clip(clips: np.ndarray, votes: np.ndarray, limit: int) -> np.ndarray:
    """Indices of each clip's highest vote, the ``limit`` best clips first."""
    order = np.lexsort((-votes, clips))
    first = np.ones(order.size, dtype=bool)
    first[1:] = clips[order][1:] != clips[order][:-1]
    best = order[first]
    return best[np.argsort(-votes[best], kind="stable")][: max(limit, 1)]


DiagonalScore = Callable[[int, int], tuple[float, int]]


def best_matches(
    clips: np.ndarray,
    offsets: np.ndarray,
    votes: np.ndarray,
    rescore: DiagonalScore,
    limit: int,
) -> list[Match]:
    """Best offset per clip by votes; the top ``limit`` clips re-scored by ``rescore(clip, offset)``."""
    if clips.size == 0:
        return []
    matches = []
    for i in best_per_clip(clips, votes, limit):
        clip, offset = int(clips[i]), int(offsets[i])
        # Votes are smoothed over one hop; the exact diagonal is whichever of the three scores best.
        scored = [(rescore(clip, o), o) for o in (offset - 1, offset, offset + 1)]
        (score, q_start), o = max(scored, key=lambda item: item[0][0])
        matches.append(Match(clip=clip, offset=o, query_start=q_start, votes=float(votes[i]), score=score))
    matches.sort(key=lambda mt: -mt.score)
    return matches


def diagonal_score(query: np.ndarray, clip_frames: np.ndarray, offset: int) -> tuple[float, int]:
    """Mean cosine similarity of query frame i with clip frame i + offset, over all query frames.

    Query frames that fall outside the clip count as zero, so a clip that matches along the whole
    query beats one that overlaps it briefly. Also returns where the match starts in the query: the
    first aligned frame within 60 % of the best one (a query may hold several sounds in turn).
    """
    m = query.shape[0]
    q_lo = max(0, -offset)
    q_hi = min(m, clip_frames.shape[0] - offset)
    if q_hi <= q_lo:
        return 0.0, q_lo
    sims = np.einsum("ij,ij->i", query[q_lo:q_hi], clip_frames[q_lo + offset : q_hi + offset])
    start = q_lo + int(np.argmax(sims >= 0.6 * sims.max()))
    return float(sims.sum() / m), start
