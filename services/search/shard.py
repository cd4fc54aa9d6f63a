"""One shard of the frame index: durable per-clip segments, a ScaNN index over sealed rows, an exact delta."""

from __future__ import annotations

import io
import logging
import os
import threading
from pathlib import Path

import numpy as np

from echovids.errors import SpaceMismatch
from services.search.landmark_index import LandmarkMatch, LandmarkPostings

log = logging.getLogger(__name__)


def scann_searcher(data: np.ndarray, neighbours: int):  # type: ignore[no-untyped-def]
    """A ScaNN searcher sized to the data: exact for small shards, partitioned + quantised for large."""
    from scann import scann_ops_pybind

    builder = scann_ops_pybind.builder(data, neighbours, "dot_product")
    n = data.shape[0]
    if n < 20_000:
        return builder.score_brute_force().build()
    leaves = int(np.sqrt(n))
    return (
        builder.tree(num_leaves=leaves, num_leaves_to_search=max(8, leaves // 10), training_sample_size=min(n, 250_000))
        .score_ah(2, anisotropic_quantization_threshold=0.2)
        .reorder(max(100, neighbours * 4))
        .build()
    )


class ShardIndex:
    """Frames of the shard's clips in memory; thread-safe; replicas converge by re-reading the segments."""

    def __init__(self, root: Path, shard: int, delta_max: int = 512) -> None:
        self.dir = root / "shards" / str(shard)
        self.segments = self.dir / "segments"
        self.tombstones = self.dir / "tombstones"
        self.segments.mkdir(parents=True, exist_ok=True)
        self.tombstones.mkdir(parents=True, exist_ok=True)
        self.shard = shard
        self.delta_max = delta_max
        self.space: str | None = None
        self.clip_ids: list[str] = []
        self.clip_pos: dict[str, int] = {}
        self.clip_rows: list[tuple[int, int]] = []  # (first row, frame count) per clip
        self.deleted: set[str] = set()
        self._dim = 0
        self._vectors = np.empty((0, 0), dtype=np.float32)
        self._row_clip = np.empty(0, dtype=np.int32)
        self._row_frame = np.empty(0, dtype=np.int32)
        self._rows = 0
        self._sealed = 0  # rows [0, sealed) are in the ScaNN searcher; the rest are searched exactly
        self._searcher = None
        self.landmarks = LandmarkPostings()
        self._lock = threading.RLock()
        self.refresh()

    # -- durable state -------------------------------------------------------------------------
    def write_segment(self, clip_id: str, arrays: dict[str, np.ndarray], space: str) -> None:
        """Write a clip's frame vectors and landmarks; temp file then rename, so no reader sees half of one."""
        self.check_space(space)
        path = self.segments / f"{clip_id}.npz"
        if path.exists():
            return  # idempotent: a retried task writes nothing twice
        buffer = io.BytesIO()
        np.savez(buffer, vectors=arrays["vectors"].astype(np.float16), hashes=arrays["hashes"],
                 times=arrays["times"], space=np.array(space))
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, path)

    def write_tombstone(self, clip_id: str) -> None:
        (self.tombstones / clip_id).touch()

    def refresh(self) -> None:
        """Load segments and tombstones written since the last look (by this or another replica)."""
        with self._lock:
            self.deleted.update(p.name for p in self.tombstones.iterdir())
            for path in sorted(self.segments.glob("*.npz")):
                clip_id = path.stem
                if clip_id in self.clip_pos:
                    continue
                with np.load(path) as data:
                    self._append(clip_id, data["vectors"].astype(np.float32), str(data["space"]))
                    self.landmarks.add(self.clip_pos[clip_id], data["hashes"], data["times"])

    def check_space(self, space: str) -> None:
        if self.space is not None and space != self.space:
            raise SpaceMismatch(
                f"This library holds vectors of the embedding space {self.space!r}; "
                f"vectors of {space!r} cannot be compared with them."
            )

    # -- memory --------------------------------------------------------------------------------
    def _append(self, clip_id: str, vectors: np.ndarray, space: str) -> None:
        self.check_space(space)
        self.space = space
        n, dim = vectors.shape
        if self._rows + n > len(self._vectors) or dim != self._dim:
            capacity = max(1024, 2 * (self._rows + n))
            grown = np.zeros((capacity, dim), dtype=np.float32)
            if self._rows:
                grown[: self._rows] = self._vectors[: self._rows]
            self._vectors = grown
            self._row_clip = np.resize(self._row_clip, capacity)
            self._row_frame = np.resize(self._row_frame, capacity)
            self._dim = dim
        rows = slice(self._rows, self._rows + n)
        self._vectors[rows] = vectors
        self._row_clip[rows] = len(self.clip_ids)
        self._row_frame[rows] = np.arange(n)
        self.clip_pos[clip_id] = len(self.clip_ids)
        self.clip_ids.append(clip_id)
        self.clip_rows.append((self._rows, n))
        self._rows += n

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def row_clip(self) -> np.ndarray:
        return self._row_clip[: self._rows]

    @property
    def row_frame(self) -> np.ndarray:
        return self._row_frame[: self._rows]

    def clip_frames(self, clip: int) -> np.ndarray:
        first, n = self.clip_rows[clip]
        return self._vectors[first : first + n]

    def live_mask(self) -> np.ndarray:
        return np.array([cid not in self.deleted for cid in self.clip_ids], dtype=bool)

    def match_landmarks(self, hashes: np.ndarray, times: np.ndarray, limit: int) -> list[LandmarkMatch]:
        with self._lock:
            return self.landmarks.match(hashes, times, self.live_mask(), limit)

    # -- search --------------------------------------------------------------------------------
    def _seal(self) -> None:
        """Rebuild the ScaNN searcher over every row once the exactly-searched delta grows too large."""
        if self._rows - self._sealed <= self.delta_max:
            return
        self._searcher = scann_searcher(self._vectors[: self._rows], neighbours=10)
        self._sealed = self._rows
        log.info("shard %s: ScaNN index rebuilt over %d frames", self.shard, self._rows)

    def search(self, queries: np.ndarray, neighbours: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest rows for each query frame, by dot product of unit vectors (= cosine); -1 pads."""
        with self._lock:
            self._seal()
            m = queries.shape[0]
            parts_rows, parts_sims = [], []
            if self._searcher is not None and self._sealed:
                k = min(neighbours, self._sealed)
                rows, sims = self._searcher.search_batched(queries, final_num_neighbors=k)
                parts_rows.append(rows.astype(np.int64))
                parts_sims.append(sims)
            if self._rows > self._sealed:
                delta = self._vectors[self._sealed : self._rows]
                sims = queries @ delta.T
                k = min(neighbours, delta.shape[0])
                top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
                parts_rows.append(top + self._sealed)
                parts_sims.append(np.take_along_axis(sims, top, axis=1))
            if not parts_rows:
                return np.full((m, 0), -1, dtype=np.int64), np.zeros((m, 0), dtype=np.float32)
            rows = np.concatenate(parts_rows, axis=1)
            sims = np.concatenate(parts_sims, axis=1).astype(np.float32)
            if self.deleted:
                gone = ~self.live_mask()[self._row_clip[rows]]
                rows = np.where(gone, -1, rows)
                sims = np.where(gone, 0.0, sims)
            return rows, sims
