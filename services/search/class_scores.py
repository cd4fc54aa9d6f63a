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
    frames scores -inf.
    """
    scores = np.asarray(scores, dtype=np.float64)
    offsets = np.asarray(offsets, dtype=np.intp)
    if stretch < 1:
        raise ValueError("stretch must be at least one frame")
    clips = offsets.size - 1
    lengths = np.diff(offsets)
    cumsum = np.concatenate([[0.0], np.cumsum(scores)])
    clip_score = np.full(clips, -np.inf)
    best_start = np.zeros(clips, dtype=np.intp)
    # Windows of the full stretch: every start s with s + stretch <= the clip's end.
    starts = np.arange(scores.size - stretch + 1) if scores.size >= stretch else np.zeros(0, np.intp)
    window = (cumsum[starts + stretch] - cumsum[starts]) / stretch
    owner = np.searchsorted(offsets, starts, side="right") - 1
    fits = starts + stretch <= offsets[np.minimum(owner + 1, clips)]
    starts, window, owner = starts[fits], window[fits], owner[fits]
    if starts.size:
        # Best window per clip: sort by (clip, -score, start) and take each clip's first.
        order = np.lexsort((starts, -window, owner))
        first = np.concatenate([[True], owner[order][1:] != owner[order][:-1]])
        winners = order[first]
        clip_score[owner[winners]] = window[winners]
        best_start[owner[winners]] = starts[winners] - offsets[owner[winners]]
    short = (lengths > 0) & (lengths < stretch)
    clip_score[short] = (cumsum[offsets[1:][short]] - cumsum[offsets[:-1][short]]) / lengths[short]
    return clip_score, best_start


def rank(clip_score: np.ndarray, k: int) -> np.ndarray:
    """The indices of the ``k`` best clips, best first (equal scores: the lower index first)."""
    k = max(0, min(k, clip_score.size))
    if k == 0:
        return np.zeros(0, dtype=np.intp)
    candidates = np.argpartition(-clip_score, k - 1)[:k]
    return candidates[np.lexsort((candidates, -clip_score[candidates]))]
