"""One shard's search in-process: `search_shard` as a query task calls it, on a library already built.

The end-to-end figures (`bench scale`, `bench latency`) pass through Celery, Redis and the embedder, on cores the
whole stack shares, and move by several ms from run to run; a change to the shard's own work is measured here,
without them. The library is one `bench scale` or `bench latency` wrote (`--workdir`); the queries are 10 s
stretches of its own clips moved by noise (a cosine of ~0.95 to their source frames), each searched once to warm
up, then timed ``passes`` times.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

QUERY_FRAMES = 21  # a 10 s query at the 0.48 s hop
NOISE = 0.3  # the noise vector's norm against the unit frame


@dataclass
class ShardSearchReport:
    data_dir: str
    shard: int
    rows: int
    stored_dim: int
    queries: int
    passes: int
    load_s: float
    p50_ms: float
    mean_ms: float
    p90_ms: float


def query_frames(frames: np.ndarray, axes: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """A query's frames in the embedding's own space, near ``frames`` (a clip's frames as the shard stores them):
    a projected shard's frames mapped back onto its axes (what the axes leave out is lost: it is noise here)."""
    if axes is not None:
        frames = frames[:, : axes.shape[1]] @ axes.T
    moved = frames + NOISE * rng.standard_normal(frames.shape).astype(np.float32) / np.sqrt(frames.shape[1])
    return moved / np.linalg.norm(moved, axis=1, keepdims=True)


def run(data_dir: Path, shard: int = 0, queries: int = 100, passes: int = 3, seed: int = 0) -> ShardSearchReport:
    from services.search.query import search_shard
    from services.search.shard import ShardIndex

    started = time.perf_counter()
    index = ShardIndex(data_dir, shard)
    view = index.view()
    load_s = time.perf_counter() - started
    if view.rows == 0:
        raise ValueError(f"shard {shard} under {data_dir} holds no frames")
    assert index.space is not None, "a shard with frames knows their embedding space"
    axes = None if view.searcher is None or view.projection is None else view.projection.axes
    rng = np.random.default_rng(seed)
    asked: list[dict[str, np.ndarray]] = []
    for clip in rng.choice(len(view.clip_ids), size=queries, replace=False):
        stored = view.clip_frames(int(clip))
        frames = np.asarray(stored[0 : min(stored.shape[0], QUERY_FRAMES)], dtype=np.float32)
        asked.append(
            {
                "vectors": query_frames(frames, axes, rng).astype(np.float16),
                "hashes": np.empty(0, np.uint32),
                "times": np.empty(0, np.int32),
                "weights": np.empty(0, np.float32),
            }
        )
    for arrays in asked:  # warm up: the pages of the mapped files each query touches
        search_shard(index, index.space, arrays, limit=100, k=10)
    seconds = []
    for _ in range(passes):
        for arrays in asked:
            start = time.perf_counter()
            search_shard(index, index.space, arrays, limit=100, k=10)
            seconds.append(time.perf_counter() - start)
    ms = np.array(seconds) * 1e3
    return ShardSearchReport(
        data_dir=str(data_dir),
        shard=shard,
        rows=view.rows,
        stored_dim=int(view.centre.shape[0]),
        queries=queries,
        passes=passes,
        load_s=round(load_s, 2),
        p50_ms=round(statistics.median(ms.tolist()), 3),
        mean_ms=round(float(ms.mean()), 3),
        p90_ms=round(float(np.percentile(ms, 90)), 3),
    )
