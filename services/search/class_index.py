"""The class index of one shard: AudioSet class -> (row, level) postings, answering "where is this sound described".

A row is a frame of the shard's layout (services/search/shard.py: clip after clip, sealed then delta), so a
query's class mixture scores every frame with one ``bincount`` and each clip's best stretch follows from the
frames of its rows. Each posting costs 7 bytes (uint16 class, int32 row, uint8 level); a frame keeps only its
stored top classes (echovids/class_scores.py), those with a level above zero.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from echovids.class_scores import SCORE_SCALE, top_stretches


class ClassPostings:
    """Postings sorted by class; new clips go to an unsorted tail that is merged on the next query.

    ``sealed``: a snapshot's postings, sorted and memory-mapped (services/search/shard.py), read beside this
    index's own.
    """

    def __init__(self, sealed: SortedClassPostings | None = None) -> None:
        self._sealed = sealed
        self._classes = np.empty(0, dtype=np.uint16)
        self._rows = np.empty(0, dtype=np.int32)
        self._levels = np.empty(0, dtype=np.uint8)
        self._tail: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, first_row: int, ids: np.ndarray, levels: np.ndarray) -> None:
        """A clip's frames, ``ids``/``levels`` [frames, top], its frame f being row ``first_row + f``."""
        frames, top = ids.shape
        rows = np.repeat(np.arange(first_row, first_row + frames, dtype=np.int32), top)
        keep = levels.ravel() > 0
        self._tail.append((ids.ravel()[keep].astype(np.uint16), rows[keep], levels.ravel()[keep].astype(np.uint8)))

    def __len__(self) -> int:
        sealed = 0 if self._sealed is None else self._sealed.classes.size
        return int(sealed + self._classes.size + sum(t[0].size for t in self._tail))

    @property
    def nbytes(self) -> int:
        return int(self._classes.nbytes + self._rows.nbytes + self._levels.nbytes)

    def sorted_view(self) -> tuple[SortedClassPostings, ...]:
        """The postings, tail merged in, as arrays no later ``add`` changes (take it under the shard's lock)."""
        if self._tail:
            tail, self._tail = self._tail, []
            classes = np.concatenate([self._classes, *(t[0] for t in tail)])
            order = np.argsort(classes, kind="stable")
            self._classes = classes[order]
            del classes
            self._rows = np.concatenate([self._rows, *(t[1] for t in tail)])[order]
            self._levels = np.concatenate([self._levels, *(t[2] for t in tail)])[order]
        own = SortedClassPostings(self._classes, self._rows, self._levels)
        return (own,) if self._sealed is None else (self._sealed, own)


class SortedClassPostings(NamedTuple):
    classes: np.ndarray  # uint16, sorted
    rows: np.ndarray  # int32, the shard row (frame) of each posting
    levels: np.ndarray  # uint8, the class's score there, times SCORE_SCALE


def row_scores(
    postings: tuple[SortedClassPostings, ...], class_ids: np.ndarray, weights: np.ndarray, rows: int
) -> np.ndarray:
    """Every row's score for a class mixture: the weighted sum of its stored class scores (zero if none)."""
    scores = np.zeros(rows, dtype=np.float64)
    for part in postings:
        lo = np.searchsorted(part.classes, class_ids.astype(np.uint16), side="left")
        hi = np.searchsorted(part.classes, class_ids.astype(np.uint16), side="right")
        counts = hi - lo
        total = int(counts.sum())
        if total:
            picked = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(total)
            contribution = np.repeat(weights.astype(np.float64), counts) * part.levels[picked] / SCORE_SCALE
            scores += np.bincount(part.rows[picked], weights=contribution, minlength=rows)
    return scores


def match_classes(
    postings: tuple[SortedClassPostings, ...],
    class_ids: np.ndarray,
    weights: np.ndarray,
    clip_offsets: np.ndarray,
    allowed: np.ndarray,
    stretch: int,
    first: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``allowed`` clip positions whose best stretch scores above zero, best first (equal scores: the lower
    position first), with that score and the frame the stretch starts at; with ``first``, only that many.

    ``clip_offsets[p]:clip_offsets[p + 1]`` are clip p's rows.
    """
    scores = row_scores(postings, class_ids, weights, int(clip_offsets[-1]))
    return top_stretches(scores, clip_offsets, stretch, len(clip_offsets) - 1 if first is None else first, allowed)
