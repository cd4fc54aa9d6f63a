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

    ``scores`` holds the clips' frames one clip after another, clip i's being ``offsets[i]:offsets[i + 1]``.
    A clip shorter than ``stretch`` is scored by the mean of all its frames, from frame 0; a clip without
    frames scores -inf. Equal windows: the earliest wins. Linear in the frames (a shard's text query runs it
    over every row it holds).
    """
    scores = np.asarray(scores, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.intp)
    if stretch < 1:
        raise ValueError("stretch must be at least one frame")
    clips = offsets.size - 1
    lengths = np.diff(offsets)
    n = scores.size
    cumsum = np.concatenate([[0.0], np.cumsum(scores)])
    windows = np.full(n, -np.inf)
    if n >= stretch:
        starts = np.arange(n - stretch + 1)
        windows[: starts.size] = (cumsum[starts + stretch] - cumsum[starts]) / stretch
    owner = np.repeat(np.arange(clips), lengths)
    frame = np.arange(n) - offsets[:-1][owner]
    windows[frame + stretch > lengths[owner]] = -np.inf  # a window must end inside its clip
    short = (lengths > 0) & (lengths < stretch)
    firsts = offsets[:-1][short]
    windows[firsts] = (cumsum[offsets[1:][short]] - cumsum[firsts]) / lengths[short]
    clip_score = np.full(clips, -np.inf)
    best_start = np.zeros(clips, dtype=np.intp)
    filled = lengths > 0
    if n and filled.any():
        # Non-empty clips' starts rise strictly, so each reduceat segment is exactly one clip.
        clip_score[filled] = np.maximum.reduceat(windows, offsets[:-1][filled])
        hit = np.flatnonzero((windows == clip_score[owner]) & np.isfinite(windows))
        # Hits come in row order, so a clip's first hit (its earliest best window) is where the owner changes.
        hit_owner = owner[hit]
        first = hit[np.flatnonzero(np.diff(hit_owner, prepend=-1) != 0)]
        best_start[owner[first]] = frame[first]
    return clip_score, best_start


def rank(clip_score: np.ndarray, k: int) -> np.ndarray:
    """The indices of the ``k`` best clips, best first (equal scores: the lower index first)."""
    k = max(0, min(k, clip_score.size))
    if k == 0:
        return np.zeros(0, dtype=np.intp)
    candidates = np.argpartition(-clip_score, k - 1)[:k]
    return candidates[np.lexsort((candidates, -clip_score[candidates]))]
