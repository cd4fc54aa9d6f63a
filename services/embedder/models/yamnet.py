"""Google's YAMNet on LiteRT: 1024-d embedding and 521 AudioSet scores per 0.975 s frame."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from echovids.schemas import EmbeddingSpace
from echovids.vectors import l2_normalise
from services.embedder.base import Embedded
from services.embedder.sessions.litert import InterpreterPool, yamnet_graphs

EMBEDDING_DIM = 1024


def load_class_names(path: Path) -> list[str]:
    with path.open(newline="") as f:
        return [row["display_name"] for row in csv.DictReader(f)]


class YamnetTflite:
    """YAMNet from ``model_dir`` (yamnet.tflite, yamnet_class_map.csv), run by ``threads`` LiteRT interpreters
    (sessions/litert.py: how a call's frames are shared among them)."""

    def __init__(self, model_dir: Path, threads: int = 1) -> None:
        path = model_dir / "yamnet.tflite"
        if not path.exists():
            raise FileNotFoundError(f"YAMNet weights not found at {path}; set ECHOVIDS_MODEL_DIR.")
        self._pool = InterpreterPool(yamnet_graphs(path), threads)
        self.threads = self._pool.threads
        self.class_names = load_class_names(model_dir / "yamnet_class_map.csv")
        self.space = EmbeddingSpace(model="yamnet", version="tflite-1", dim=EMBEDDING_DIM)

    def embed(self, frames: np.ndarray) -> Embedded:
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        n = frames.shape[0]
        vectors = np.empty((n, EMBEDDING_DIM), dtype=np.float32)
        scores = np.empty((n, len(self.class_names)), dtype=np.float32)
        self._pool.run(frames, vectors, scores)
        return Embedded(vectors=l2_normalise(vectors), scores=scores)

    def log_mel_patch(self, frame: np.ndarray) -> np.ndarray:
        """The [96, 64] log-mel patch YAMNet computes for one frame (for front-end tests)."""
        return self._pool.patch(np.asarray(frame, dtype=np.float32))
