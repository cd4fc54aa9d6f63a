"""Frames' AudioSet class scores, stored compactly, and clips ranked by a text's class mixture.

A frame keeps only its ``TOP_CLASSES`` highest classes: their ids as uint16 and their scores as uint8 (score *
255, rounded), 3 bytes a class, 30 bytes a frame instead of 521 float32 (2 KB). YAMNet's scores are sigmoid
outputs in [0, 1] and a frame rarely has more than a handful above a few hundredths, so the classes left out
weigh next to nothing in any mixture (benchmarks/text.py measures the ranking from the compact form against the
full scores).

A text becomes a weight per class (echovids.text_classes); a frame's score is the weighted sum of its stored
class scores, and a clip's is the best mean over ``stretch`` consecutive frames: one lucky frame does not make a
clip, and the stretch's first frame is the moment the answer points at.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOP_CLASSES = 10
SCORE_SCALE = 255  # uint8 steps of 1/255 over the sigmoid's [0, 1]
# Frames (0.48 s hops) a clip's best stretch spans: tuned on ESC-10 folds 1-3 and checked on 4-5 (docs/quality.md).
DEFAULT_STRETCH = 2


@dataclass(frozen=True)
class CompactScores:
    """Each frame's top classes: ``ids`` uint16 [frames, TOP_CLASSES], ``levels`` uint8 [frames, TOP_CLASSES]."""

    ids: np.ndarray
    levels: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.levels.nbytes)


def encode(scores: np.ndarray, top: int = TOP_CLASSES) -> CompactScores:
    """[frames, classes] float scores in [0, 1] -> each frame's ``top`` classes, highest first."""
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [frames, classes], not {scores.shape}")
    frames, classes = scores.shape
    if classes > np.iinfo(np.uint16).max + 1:
        raise ValueError(f"{classes} classes do not fit uint16 ids")
    top = min(top, classes)
    if frames == 0:
        return CompactScores(np.zeros((0, top), np.uint16), np.zeros((0, top), np.uint8))
    chosen = np.argpartition(-scores, top - 1, axis=1)[:, :top]
    picked = np.take_along_axis(scores, chosen, axis=1)
    order = np.argsort(-picked, axis=1, kind="stable")
    ids = np.take_along_axis(chosen, order, axis=1)
    values = np.take_along_axis(picked, order, axis=1)
    levels = np.rint(np.clip(values, 0.0, 1.0) * SCORE_SCALE).astype(np.uint8)
    return CompactScores(ids.astype(np.uint16), levels)


def decode(compact: CompactScores, classes: int) -> np.ndarray:
    """Back to [frames, classes] float32: the stored classes' quantised scores, zero elsewhere."""
    dense = np.zeros((len(compact), classes), dtype=np.float32)
    rows = np.arange(len(compact))[:, None]
    dense[rows, compact.ids.astype(np.intp)] = compact.levels.astype(np.float32) / SCORE_SCALE
    return dense


def frame_scores(compact: CompactScores, weights: np.ndarray) -> np.ndarray:
    """Every frame's score for a [classes] weight vector: the weighted sum of its stored class scores."""
    weights = np.asarray(weights, dtype=np.float32)
    gathered = weights[compact.ids.astype(np.intp)]
    return np.einsum("ft,ft->f", gathered, compact.levels.astype(np.float32)) / SCORE_SCALE


def best_stretches(scores: np.ndarray, offsets: np.ndarray, stretch: int) -> tuple[np.ndarray, np.ndarray]:
    """Per clip, the best mean of ``stretch`` consecutive frame scores and the frame it starts at.

    ``scores`` holds the clips' frames one clip after another, clip i's being ``offsets[i]:offsets[i + 1]``; they
    are weighted sums of sigmoid scores, so never negative (a ValueError otherwise). A clip shorter than
    ``stretch`` is scored by the mean of all its frames, from frame 0; a clip without frames scores -inf; a clip
    where nothing scores, 0 from frame 0. Equal windows: the earliest wins.

    Only a window that holds a scoring frame can beat a clip's 0, so only those are summed: a shard's text query
    runs this over every row it holds, and most rows hear none of the text's classes.
    """
    scores = np.asarray(scores, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.intp)
    if stretch < 1:
        raise ValueError("stretch must be at least one frame")
    if scores.size and scores.min() < 0:
        raise ValueError("frame scores must not be negative")
    lengths = np.diff(offsets)
    clip_score = np.where(lengths > 0, 0.0, -np.inf)
    best_start = np.zeros(lengths.size, dtype=np.intp)
    scoring = scores > 0
    holds = scoring.copy()  # a window start whose window holds a scoring frame
    for back in range(1, min(stretch, scores.size)):
        holds[:-back] |= scoring[back:]
    starts = np.flatnonzero(holds)
    if starts.size == 0:
        return clip_score, best_start
    owner = np.searchsorted(offsets, starts, side="right") - 1
    frame = starts - offsets[owner]
    span = np.minimum(stretch, lengths[owner])
    inside = frame + span <= lengths[owner]  # a window must end inside its clip
    starts, owner, frame, span = starts[inside], owner[inside], frame[inside], span[inside]
    sums = scores[starts]
    for ahead in range(1, stretch):
        sums += np.where(ahead < span, scores[np.minimum(starts + ahead, scores.size - 1)], 0.0)
    means = sums / span
    # Starts rise, so each clip's windows are one run, and a run's first best window is its earliest.
    runs = np.flatnonzero(np.diff(owner, prepend=-1))
    best = np.maximum.reduceat(means, runs)
    clip_score[owner[runs]] = best
    hit = np.flatnonzero(means == np.repeat(best, np.diff(np.append(runs, means.size))))
    first = hit[np.flatnonzero(np.diff(owner[hit], prepend=-1))]
    best_start[owner[first]] = frame[first]
    return clip_score, best_start


def top_stretches(
    scores: np.ndarray, offsets: np.ndarray, stretch: int, k: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` clips with the best stretches, best first (equal scores: the lower index first), with their scores
    and the frames they start at: ``best_stretches`` then ``rank``, over the clips ``allowed`` (all if None) whose
    best stretch scores above zero, at a fraction of the work.

    A clip's best stretch is at most its best frame and at least that frame / ``stretch`` (the other frames are
    never negative), so a clip whose best frame is under the k-th largest of those lower bounds is not among the k:
    only the others are scored in full (a handful of a shard's clips for a text that names a few classes).
    """
    scores = np.asarray(scores, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.intp)
    clips = np.flatnonzero(np.diff(offsets) > 0)
    if k < 1 or clips.size == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0), np.zeros(0, dtype=np.intp)
    # Non-empty clips' first rows rise strictly, so each reduceat segment is exactly one clip.
    peak = np.maximum.reduceat(scores, offsets[clips])
    keep = peak > 0 if allowed is None else (peak > 0) & allowed[clips]
    clips, peak = clips[keep], peak[keep]
    if clips.size > k:
        floor = np.partition(peak, clips.size - k)[clips.size - k] / stretch
        clips = clips[peak >= floor]
    lengths = offsets[clips + 1] - offsets[clips]
    sub_offsets = np.concatenate([[0], np.cumsum(lengths)])
    rows = np.repeat(offsets[clips] - sub_offsets[:-1], lengths) + np.arange(sub_offsets[-1])
    clip_score, start = best_stretches(scores[rows], sub_offsets, stretch)
    chosen = rank(clip_score, k)  # clips rise, so the lower index of a tie is the lower clip
    return clips[chosen], clip_score[chosen], start[chosen]


def rank(clip_score: np.ndarray, k: int) -> np.ndarray:
    """The indices of the ``k`` best clips, best first (equal scores: the lower index first)."""
    k = max(0, min(k, clip_score.size))
    if k == 0:
        return np.zeros(0, dtype=np.intp)
    kth = -np.partition(-clip_score, k - 1)[k - 1]
    candidates = np.flatnonzero(clip_score >= kth)  # every clip tied with the k-th, so the lower index wins
    return candidates[np.lexsort((candidates, -clip_score[candidates]))][:k]
