"""Class labels from a model's per-frame AudioSet scores: a clip's overall labels and each frame's best few."""

from __future__ import annotations

import numpy as np


def top_labels(scores: np.ndarray | None, class_names: list[str], count: int = 3) -> list[str]:
    """The classes with the highest mean score over the given frames."""
    if scores is None or scores.size == 0:
        return []
    return labels_by_mean(scores.mean(axis=0), class_names, count)


def labels_by_mean(mean: np.ndarray, class_names: list[str], count: int = 3) -> list[str]:
    return [class_names[i] for i in np.argsort(-mean)[:count]]


def best_classes(scores: np.ndarray, per_frame: int = 3) -> np.ndarray:
    """[frames, per_frame] each frame's best class indices, best first."""
    top = np.argpartition(-scores, per_frame - 1, axis=1)[:, :per_frame]  # the best few, unordered: no full sort
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def labels_of_frames(best: np.ndarray, class_names: list[str]) -> dict[str, np.ndarray]:
    """Frames' best classes (``best_classes``) as indices into the clip's own small vocabulary of class names."""
    used = np.unique(best)
    return {
        "frame_labels": np.searchsorted(used, best).astype(np.int16),
        "label_names": np.array([class_names[i] for i in used]),
    }


def frame_labels(scores: np.ndarray | None, class_names: list[str], per_frame: int = 3) -> dict[str, np.ndarray]:
    """Each frame's best classes, as indices into the clip's own small vocabulary of class names."""
    if scores is None or scores.size == 0:
        return {}
    return labels_of_frames(best_classes(scores, per_frame), class_names)
