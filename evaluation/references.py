"""The two references every similar-sound figure is set against, on the very shard the system searches.

- **clip mean**: the plain baseline of audio retrieval. A clip is the mean of its audible YAMNet frames, and the
  library is ranked by the cosine of that mean with the query's (exact kNN, no centring, no re-scoring). Against
  long recordings a clip is each query-long window of a recording (the best window stands for the recording and
  gives the moment).
- **frame voting**: the system's first stage alone. Each audible query frame's nearest library frames vote for
  (clip, offset) pairs (``matching.vote``: the same neighbours, the same votes); a clip ranks by its best pair, and
  nothing is re-scored.

Both read the frames a :class:`ShardView` holds (projected when the shard's are), so they see the library the
system sees.
"""

from __future__ import annotations

import shutil
from pathlib import Path
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
    clips, offsets, votes = vote(rows, sims, view.row_clip, view.row_frame, view.clip_hops)
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
    vectors = view.project(vectors)  # into the space of the frames the view holds, as the system's search does
    if method == "frame voting":
        return frame_voting(view, vectors, k)
    if method == "clip mean":
        return clip_mean(view, vectors, k)
    raise ValueError(method)


class Side:
    """The references beside a suite's library: the shard the offline client searches, or (against a running
    Echovids) a shard of the same files built here with the same model."""

    def __init__(self, view: ShardView) -> None:
        from services.embedder.factory import get_model

        self.view = view
        self.model = get_model()

    @classmethod
    def beside(cls, client: object, files: dict[str, Path], folder: Path) -> Side:
        from echovids.audio import decode_file
        from services.embedder.factory import get_model
        from services.embedder.tasks import clip_arrays
        from services.search.shard import ShardIndex

        index = getattr(client, "index", None)
        if not isinstance(index, ShardIndex):
            shutil.rmtree(folder, ignore_errors=True)
            index, model = ShardIndex(folder, 0), get_model()
            for title, path in files.items():
                arrays, _ = clip_arrays(model, decode_file(path))
                index.write_segment(title, arrays, model.space.key)
                index.add_segment(title)
        return cls(index.view())

    def rank(self, data: bytes, k: int) -> dict[str, list[Ranked]]:
        """Both references' lists for one query (its bytes, as uploaded)."""
        return self.rank_timed(data, k)[0]

    def rank_timed(self, data: bytes, k: int) -> tuple[dict[str, list[Ranked]], float]:
        """Both references' lists, and the query time their ``match_start_s`` stand for: the start of the query's
        middle frame (a result's offset error is ``|match_start_s - that - true offset|``)."""
        from echovids.audio import decode_bytes
        from services.embedder.tasks import query_arrays

        vectors = query_arrays(self.model, decode_bytes(data))["vectors"]
        return {method: rank(method, self.view, vectors, k) for method in REFERENCES}, (len(vectors) // 2) * FRAME_HOP_S
