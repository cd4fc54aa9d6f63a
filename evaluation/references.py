"""The two references every similar-sound figure is set against, on the very shard the system searches.

- **clip mean**: the plain baseline of audio retrieval. A clip is the mean of its audible YAMNet frames, and the
  library is ranked by the cosine of that mean with the query's (exact kNN, no centring, no re-scoring). Against
  long recordings a clip is each query-long window of a recording (the best window stands for the recording and
  gives the moment).
- **frame voting**: the system's first stage alone. Each audible query frame's nearest library frames vote for
  (clip, offset) pairs (``matching.vote``: the same neighbours, the same votes); a clip ranks by its best pair, and
  nothing is re-scored.

Both read the frames a :class:`ShardView` holds, so they see the library the system sees.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from echovids.audio_params import FRAME_HOP_S
from echovids.settings import get_settings
from services.search.matching import audible_mean, best_per_clip, neighbours_for, vote
from services.search.shard import ShardView

REFERENCES = ("frame voting", "clip mean")


class Ranked(NamedTuple):
    title: str
    match_start_s: float


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-9)


def frame_voting(view: ShardView, vectors: np.ndarray, k: int) -> list[Ranked]:
    """Clips by their best (clip, offset) vote; the moment is the middle of the query at that offset."""
    vectors = vectors.astype(np.float32)
    audible = int(np.count_nonzero(vectors.any(axis=1)))
    neighbours = neighbours_for(get_settings().search_neighbours, max(k * 2, 100), audible)
    rows, sims = view.search(vectors, neighbours)
    clips, offsets, votes = vote(rows, sims, view.row_clip, view.row_frame)
    best = best_per_clip(clips, votes, k) if clips.size else clips
    middle = len(vectors) // 2
    return [Ranked(view.clip_ids[int(clips[b])], max(0, int(offsets[b]) + middle) * FRAME_HOP_S) for b in best]


def clip_mean(view: ShardView, vectors: np.ndarray, k: int) -> list[Ranked]:
    """Clips by the cosine of their mean audible frame with the query's, over query-long windows of each clip."""
    query = _unit(audible_mean(vectors.astype(np.float32)))
    m = max(1, len(vectors))
    scored = []
    for clip, title in enumerate(view.clip_ids):
        if not view.live[clip]:
            continue
        frames = view.clip_frames(clip).astype(np.float32)
        if not frames.size:
            continue
        span = min(m, len(frames))
        audible = frames.any(axis=1).astype(np.float64)
        sums = np.concatenate([np.zeros((1, frames.shape[1])), np.cumsum(frames, axis=0, dtype=np.float64)])
        counts = np.concatenate([[0.0], np.cumsum(audible)])
        windows = (sums[span:] - sums[:-span]) / np.maximum(counts[span:] - counts[:-span], 1)[:, None]
        cosines = _unit(windows) @ query
        start = int(np.argmax(cosines))
        scored.append((float(cosines[start]), title, (start + span // 2) * FRAME_HOP_S))
    scored.sort(key=lambda s: -s[0])
    return [Ranked(title, at) for _, title, at in scored[:k]]


def rank(method: str, view: ShardView, vectors: np.ndarray, k: int) -> list[Ranked]:
    if method == "frame voting":
        return frame_voting(view, vectors, k)
    if method == "clip mean":
        return clip_mean(view, vectors, k)
    raise ValueError(method)
