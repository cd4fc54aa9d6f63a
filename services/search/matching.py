"""Time-aligned matching: frame neighbours vote on (clip, offset); the best pairs are re-scored on the diagonal."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np


class Int8Frames:
    """A clip's frames as a snapshot keeps them: int8 codes and a scale a row (echovids.vectors.int8_rows), read
    as float32 a stretch at a time (a cosine off by a few thousandths at most, at half float16's bytes)."""

    dtype = np.dtype(np.float32)

    def __init__(self, codes: np.ndarray, scales: np.ndarray) -> None:
        self.codes, self.scales = codes, scales
        self.shape = codes.shape

    def __getitem__(self, rows: slice | np.ndarray) -> np.ndarray:
        return self.codes[rows].astype(np.float32) * self.scales[rows, None]

    def astype(self, dtype: Any) -> np.ndarray:
        return self[:].astype(dtype)


class Upsampled:
    """A clip's frames stored at ``ratio`` query hops each, read at the query's hop.

    Position p lies between stored frames p // ratio and the next, and reads their mix, normalised (the frame
    an overlapping analysis would have made there, near enough: AudioSet's 0.96 s features read at 0.48 s have
    each odd position as the mean of its two neighbours). Only the rows read are made, so aligning a query
    to a long clip costs what it does at the query's own hop.
    """

    def __init__(self, frames: np.ndarray | Int8Frames, ratio: int) -> None:
        self.frames = frames
        self.ratio = ratio
        self.shape = (frames.shape[0] * ratio, frames.shape[1])

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, step = rows.indices(self.shape[0])
        assert step == 1, "read as a stretch"
        if stop <= start:
            return np.zeros((0, self.shape[1]), dtype=self.frames.dtype)
        r, first = self.ratio, start // self.ratio
        last = (stop - 1) // r  # the stored frames the stretch lies on, and the one after the last (or itself)
        stored = self.frames[first : min(last + 2, self.frames.shape[0])].astype(np.float32)
        if stored.shape[0] < last - first + 2:
            stored = np.concatenate([stored, stored[-1:]])
        fine = np.empty(((stored.shape[0] - 1) * r, self.shape[1]), dtype=np.float32)
        fine[0::r] = stored[:-1]  # a stored frame is a unit vector (or a muted zero) already
        for k in range(1, r):
            mixed = (r - k) * stored[:-1] + k * stored[1:]
            norms = np.sqrt(np.einsum("ij,ij->i", mixed, mixed))[:, None]
            fine[k::r] = mixed / np.maximum(norms, 1e-12)  # two muted frames mix to zero
        return fine[start - first * r : stop - first * r]

    def astype(self, dtype: Any) -> np.ndarray:
        return self[:].astype(dtype)


Stored = np.ndarray | Int8Frames  # a clip's frames at the hop they were stored at
Frames = Stored | Upsampled  # a clip's frames at the query's hop


class ClipReader(Protocol):
    """The candidates' frames at the query's hop, read for all of them at once (a query aligns ~100 clips)."""

    def lengths(self, clips: np.ndarray) -> np.ndarray:
        """Each clip's frames at the query's hop (int64)."""
        ...

    def block(self, clips: np.ndarray, first: np.ndarray, rows: int) -> np.ndarray:
        """[n, rows, d] float32: clip ``clips[c]``'s frames ``first[c]`` to ``first[c] + rows``, zeros outside it."""
        ...


class EachClip:
    """A ClipReader over one clip's frames at a time (``frames_of(clip)``)."""

    def __init__(self, frames_of: Callable[[int], Frames]) -> None:
        self.frames_of = frames_of

    def lengths(self, clips: np.ndarray) -> np.ndarray:
        return np.array([self.frames_of(int(c)).shape[0] for c in clips], dtype=np.int64)

    def block(self, clips: np.ndarray, first: np.ndarray, rows: int) -> np.ndarray:
        stored = [self.frames_of(int(c)) for c in clips]
        block = np.zeros((clips.size, rows, stored[0].shape[1] if stored else 0), dtype=np.float32)
        for c, frames in enumerate(stored):
            a, b = max(0, int(first[c])), min(frames.shape[0], int(first[c]) + rows)
            if b > a:
                block[c, a - first[c] : b - first[c]] = frames[a:b]
        return block


@dataclass
class Match:
    clip: int  # the clip's position in the shard
    offset: int  # library frame index minus query frame index, in hops
    query_start: int  # the query frame placed at the match's moment (the middle of its best-matching stretch)
    votes: float
    score: float


def vote(
    neighbour_rows: np.ndarray,
    neighbour_sims: np.ndarray,
    row_clip: np.ndarray,
    row_frame: np.ndarray,
    clip_hops: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum similarities per (clip, offset) with a tolerance of one hop.

    Returns parallel arrays (clip, offset, votes), one entry per voted pair; offsets in query hops, the stored
    frame of a clip at ``clip_hops`` query hops a frame (None: one) placed at its first.
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
    positions = row_frame[rows].astype(np.int64)
    if clip_hops is not None:
        positions *= clip_hops[clips]
    offsets = positions - q_index
    # A query frame may hit several frames of one clip: each (query frame, clip, offset) counts once.
    span = int(m) + int(positions.max(initial=0)) + 2
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


@dataclass(frozen=True)
class Rescoring:
    """The constants of a similar match's score, in one place so the evaluation can sweep them (docs/quality.md,
    "Similar sounds out of sample": each was chosen on some ESC-10 folds and measured on the others)."""

    # The best few matches' sounds are added to the query before the final scores (query expansion); 0: none.
    expansion: int = 5
    # Weight of the frame-by-frame fit in the score (the rest is the cosine of the means).
    fit_weight: float = 0.05
    # Share of the library's average sound taken out of both sides before the cosine of the means. YAMNet's
    # embeddings all lean one way (any two sounds have a high cosine); 0: the plain cosine.
    centre_weight: float = 0.5
    # A long clip is aligned at its second-best voted offset too and keeps the better.
    second_offsets: bool = True
    # Weight of the plain cosine of the means (no centring, no expansion, no fit) in the score: at 1 a similar
    # match ranks as the clip-mean baseline does, over the clips the votes reached.
    mean_weight: float = 0.0
    # Neighbours per query frame on a second look when the first reached too few clips, as a multiple.
    wider_look: int = 4


RESCORING = Rescoring()


class Alignments(NamedTuple):
    """Each candidate aligned to the query at its best offset (parallel arrays, one row per candidate)."""

    offset: np.ndarray  # int64: library frame minus query frame
    fit: np.ndarray  # mean per-frame cosine over the whole query (frames outside the clip count as zero)
    query_start: np.ndarray  # the middle of the aligned query frames within 60 % of the best frame's similarity
    clip_mean: np.ndarray  # [n, d] mean of the audible frames of the clip's query-long stretch at the offset
    span: np.ndarray  # frames in that stretch (slid inside the clip): the query's length, or the whole clip
    overlap: np.ndarray  # query frames that fall inside the clip at the offset


def align(query: np.ndarray, reader: ClipReader, clips: np.ndarray, offsets: np.ndarray, slack: int) -> Alignments:
    """Align each clip at the offset within +-``slack`` hops of its voted one that fits the query best.

    Vectorised over the candidates: each clip is read only where the query lies on it (an hour-long clip
    costs what a short one does), all of them as one [n, rows, d] float32 block.
    """
    m, d = query.shape
    n, width = clips.size, m + 2 * slack
    lengths = reader.lengths(clips)
    first = offsets.astype(np.int64) - slack  # the offsets tried cover clip rows [first, first + width)
    # The clip's stretch as long as the query at the offset, slid inside the clip where the query overhangs an
    # end (a 5 s query against a 5 s clip compares the whole clip, whatever the offset); for any offset tried
    # it starts between these two rows.
    span = np.minimum(m, lengths)
    earliest, latest = np.clip(first, 0, lengths - span), np.clip(first + 2 * slack, 0, lengths - span)
    lo = np.minimum(first, earliest)
    rows = int((np.maximum(first + width, latest + span) - lo).max(initial=width))
    block = reader.block(clips, lo, rows)  # zeros outside each clip
    # Per-frame cosine at each offset tried, [n, 2 slack + 1, m]: diagonals of one product per candidate.
    t, each = np.arange(m), np.arange(n)[:, None]
    gram = (block.reshape(n * rows, d) @ query.T).reshape(n, rows, m)
    base = (first - lo)[:, None] + t
    sims = np.stack([gram[each, base + s, t] for s in range(2 * slack + 1)], axis=1)
    shift = np.argmax(sims.sum(axis=2), axis=1)  # ties: the earliest offset
    best = sims[np.arange(n), shift]
    offset = first + shift
    position = t[None, :] + offset[:, None]
    inside = (position >= 0) & (position < lengths[:, None])
    peak = np.where(inside, best, -np.inf).max(axis=1, initial=-np.inf)
    strong = inside & (best >= 0.6 * peak[:, None])
    # The result's moment is the middle of the stretch that matches well, not its first frame: a sound's
    # stretch often begins on the tail of whatever precedes it (ESC-10 recordings: similar-moment timestamped
    # P@10 0.854 -> 0.921, docs/quality.md).
    middle = np.argmax(np.cumsum(strong, axis=1) > (strong.sum(axis=1) // 2)[:, None], axis=1)
    query_start = np.where(strong.any(axis=1), middle, np.maximum(0, -offset))
    top = (np.clip(offset, 0, lengths - span) - lo)[:, None]
    stretch = (np.arange(rows) >= top) & (np.arange(rows) < top + span[:, None])
    sums = np.matmul(stretch.astype(np.float32)[:, None, :], block)[:, 0]
    audible = (stretch & block.any(axis=2)).sum(axis=1)
    return Alignments(
        offset=offset,
        fit=best.sum(axis=1) / m,
        query_start=query_start,
        clip_mean=sums / np.maximum(audible, 1)[:, None],
        span=span,
        overlap=inside.sum(axis=1),
    )


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-9)


def audible_mean(frames: np.ndarray) -> np.ndarray:
    """Mean of the frames that are not muted silence; zeros if every frame is."""
    audible = frames[frames.any(axis=1)]
    return audible.mean(axis=0) if audible.size else np.zeros(frames.shape[1], dtype=np.float32)


def centred(means: np.ndarray, centre: np.ndarray, weight: float) -> np.ndarray:
    """Unit vectors of ``means`` less ``weight`` of the library's average sound; a silent (zero) mean stays zero."""
    keep = means.any(axis=-1, keepdims=True)
    return np.where(keep, _unit(means - weight * centre), 0.0)


def scores(
    aligned: Alignments,
    query: np.ndarray,
    centre: np.ndarray,
    expansion: np.ndarray | None = None,
    rescoring: Rescoring = RESCORING,
) -> np.ndarray:
    """How alike query and clip sound at their alignment; ``expansion`` (a [d] vector) is added to the query.

    Mostly the cosine of the query's mean embedding with the mean of the clip's stretch at the offset (audible
    frames, ``centre``: the library's average frame, partly taken out): similar sounds need not match frame by
    frame (someone's own dog barks to its own rhythm). A clip shorter than half the query is scaled down, so a
    brief sound does not stand for a long query. ``rescoring.fit_weight`` of the frame-by-frame fit is mixed in.
    """
    weight = rescoring.centre_weight
    target = centred(audible_mean(query), centre, weight)
    if expansion is not None:
        target = target + expansion
    cosine = centred(aligned.clip_mean, centre, weight) @ _unit(target)
    coverage = np.minimum(1.0, aligned.span / max(2, query.shape[0] // 2))
    mixed = (1 - rescoring.fit_weight) * cosine * coverage + rescoring.fit_weight * aligned.fit
    if rescoring.mean_weight:
        plain = _unit(aligned.clip_mean) @ _unit(audible_mean(query)) * coverage
        mixed = (1 - rescoring.mean_weight) * mixed + rescoring.mean_weight * plain
    return np.where(aligned.overlap > 0, mixed, 0.0)


def second_offsets(
    clips: np.ndarray, offsets: np.ndarray, votes: np.ndarray, picked: np.ndarray, lengths: np.ndarray, m: int
) -> np.ndarray:
    """Indices of the picked clips' next-best voted offsets, at least ``separation(m)`` hops from their best.

    Only for clips long enough to hold the query twice that far apart (``lengths`` parallel to ``picked``):
    in a shorter one both alignments would score the same stretch.
    """
    gap = separation(m)
    size = int(clips.max(initial=0)) + 1
    best_offset = np.zeros(size, dtype=np.int64)
    best_offset[clips[picked]] = offsets[picked]
    eligible = np.zeros(size, dtype=bool)
    eligible[clips[picked]] = lengths - m >= gap
    far = np.flatnonzero(eligible[clips] & (np.abs(offsets - best_offset[clips]) >= gap))
    return far[best_per_clip(clips[far], votes[far], picked.size)] if far.size else far


def separation(m: int) -> int:
    """Hops between the two offsets a long clip is aligned at: 2/3 of the query (ESC-10: m/2 0.930, m 0.936)."""
    return max(2, 2 * m // 3)


def best_matches(
    clips: np.ndarray,
    offsets: np.ndarray,
    votes: np.ndarray,
    query: np.ndarray,
    reader: ClipReader,
    limit: int,
    centre: np.ndarray,
    rescoring: Rescoring = RESCORING,
) -> list[Match]:
    """The top ``limit`` clips by votes, each aligned at its best offsets to the hop, scored with query expansion.

    A long clip may hold sounds like the query at several places, and the best-voted one is not always the
    one that sounds most alike, so a long clip is aligned at its second-best offset too and keeps the better
    (ESC-10 recordings: similar-moment timestamped P@10 0.921 -> 0.933 through the system, docs/quality.md).
    """
    if clips.size == 0:
        return []
    picked = best_per_clip(clips, votes, limit)
    lengths = reader.lengths(clips[picked])
    if rescoring.second_offsets:
        picked = np.concatenate([picked, second_offsets(clips, offsets, votes, picked, lengths, len(query))])
    # Votes are smoothed over one hop; the exact diagonal is whichever of the three lines up best.
    aligned = align(query, reader, clips[picked], offsets[picked], slack=1)
    final = scores(aligned, query, centre, rescoring=rescoring)
    if rescoring.expansion:
        leaders = best_per_clip(clips[picked], final, rescoring.expansion)
        leaders = leaders[aligned.overlap[leaders] > 0]
        expansion = centred(aligned.clip_mean[leaders], centre, rescoring.centre_weight).sum(axis=0)
        final = scores(aligned, query, centre, expansion=expansion, rescoring=rescoring)
    kept = best_per_clip(clips[picked], final, picked.size)
    return [
        Match(
            clip=int(clips[picked[c]]),
            offset=int(aligned.offset[c]),
            query_start=int(aligned.query_start[c]),
            votes=float(votes[picked[c]]),
            score=float(final[c]),
        )
        for c in kept
    ]


def neighbours_for(settings_neighbours: int, limit: int, query_frames: int) -> int:
    """Library frames each query frame retrieves: the setting, or more when a short query must reach ``limit``
    distinct clips (9 frames x 20 neighbours reached as few as 5 ESC-10 clips for a 5 s query)."""
    return max(settings_neighbours, -(-2 * limit // max(1, query_frames)))


class Aligned(NamedTuple):
    score: float  # ranks clips: how alike the sounds are at this alignment (see scores)
    fit: float  # mean per-frame cosine over the whole query
    query_start: int  # the query frame at the match's moment


def aligned_score(query: np.ndarray, clip_frames: Frames, offset: int, centre: np.ndarray) -> Aligned:
    """One clip at one given offset (an exact match's, placed by its landmarks), scored without expansion."""
    aligned = align(query, EachClip(lambda _: clip_frames), np.zeros(1, dtype=np.int64), np.array([offset]), slack=0)
    return Aligned(float(scores(aligned, query, centre)[0]), float(aligned.fit[0]), int(aligned.query_start[0]))
