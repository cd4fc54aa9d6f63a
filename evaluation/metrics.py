"""Metric functions on plain lists, so they can be checked by hand."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def precision_at_k(relevant: Sequence[bool], k: int) -> float:
    """Share of the first ``k`` results that are relevant; missing results (fewer than k) count as misses."""
    if k <= 0:
        raise ValueError("k must be positive")
    return sum(bool(r) for r in list(relevant)[:k]) / k


def average_precision(relevant: Sequence[bool], n_relevant: int) -> float:
    """AP of a ranked list against ``n_relevant`` relevant items in the whole library.

    Relevant items the list does not reach count with precision 0 (so a list cut at 100 gives AP@100, never more
    than the full-ranking AP would).
    """
    if n_relevant <= 0:
        return 0.0
    hits, total = 0, 0.0
    for rank, rel in enumerate(relevant, 1):
        if rel:
            hits += 1
            total += hits / rank
    return total / n_relevant


def timestamped_hit(
    segments: Sequence[tuple[float, float, str]], label: str, t: float, tolerance_s: float = 0.5
) -> bool:
    """True when time ``t`` falls inside a segment ``(start, end, label)`` of ``label``, widened by the tolerance."""
    return any(lab == label and start - tolerance_s <= t <= end + tolerance_s for start, end, lab in segments)


def offset_error(match_start_s: float, query_start_s: float, true_offset_s: float) -> float:
    """How far the result's alignment is from the truth, in seconds.

    The result says "query time ``query_start_s`` is at ``match_start_s`` in the recording"; an excerpt taken at
    ``true_offset_s`` has its query time q at ``true_offset_s + q``.
    """
    return abs((match_start_s - query_start_s) - true_offset_s)


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else None


def mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None
