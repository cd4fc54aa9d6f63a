"""Audio embedding models: one class per model, loaded lazily once per worker process."""

from __future__ import annotations

import csv
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from echovids.schemas import EmbeddingSpace
from echovids.settings import Settings, get_settings

YAMNET_EMBEDDING_TENSOR = "yamnet_frames/global_average_pooling2d/Mean"


@dataclass
class Embedded:
    """Per-frame output: L2-normalised embeddings and, when the model has them, AudioSet class scores."""

    vectors: np.ndarray  # [n, dim] float32, unit length
    scores: np.ndarray | None  # [n, classes] float32


class AudioModel(Protocol):
    space: EmbeddingSpace
    class_names: list[str]

    def embed(self, frames: np.ndarray) -> Embedded: ...


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # A silent frame embeds to zeros; keep it zero rather than dividing by zero.
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def load_class_names(path: Path) -> list[str]:
    with path.open(newline="") as f:
        return [row["display_name"] for row in csv.DictReader(f)]


class YamnetTflite:
    """Google's YAMNet on LiteRT: 1024-d embedding and 521 AudioSet scores per 0.975 s frame."""

    def __init__(self, model_dir: Path, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter

        path = model_dir / "yamnet.tflite"
        if not path.exists():
            raise FileNotFoundError(f"YAMNet weights not found at {path}; set ECHOVIDS_MODEL_DIR.")
        # The embedding is an intermediate tensor, readable only when all tensors are preserved.
        self._interpreter = Interpreter(
            str(path), num_threads=threads, experimental_preserve_all_tensors=True
        )
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = {o["name"]: o["index"] for o in self._interpreter.get_output_details()}
        self._scores = outputs["Identity"]
        self._patch = outputs["Identity_1"]
        self._embedding = next(
            t["index"] for t in self._interpreter.get_tensor_details() if t["name"] == YAMNET_EMBEDDING_TENSOR
        )
        self._lock = threading.Lock()
        self.class_names = load_class_names(model_dir / "yamnet_class_map.csv")
        self.space = EmbeddingSpace(model="yamnet", version="tflite-1", dim=1024)

    def embed(self, frames: np.ndarray) -> Embedded:
        n = frames.shape[0]
        vectors = np.empty((n, 1024), dtype=np.float32)
        scores = np.empty((n, len(self.class_names)), dtype=np.float32)
        with self._lock:  # one interpreter is not safe to share between threads
            for i in range(n):
                self._interpreter.set_tensor(self._input, frames[i : i + 1])
                self._interpreter.invoke()
                vectors[i] = self._interpreter.get_tensor(self._embedding)[0]
                scores[i] = self._interpreter.get_tensor(self._scores)[0]
        return Embedded(vectors=l2_normalise(vectors), scores=scores)

    def log_mel_patch(self, frame: np.ndarray) -> np.ndarray:
        """The [96, 64] log-mel patch YAMNet computes for one frame (for front-end tests)."""
        with self._lock:
            self._interpreter.set_tensor(self._input, frame.reshape(1, -1).astype(np.float32))
            self._interpreter.invoke()
            return np.array(self._interpreter.get_tensor(self._patch))


def build_model(settings: Settings) -> AudioModel:
    if settings.embedder == "yamnet":
        return YamnetTflite(settings.model_dir, threads=settings.tflite_threads)
    from services.embedder.vggish import VggishHub

    return VggishHub(settings.vggish_handle, pca_params=settings.vggish_pca_params)


@lru_cache(maxsize=1)
def get_model() -> AudioModel:
    """Loaded on first use inside the worker process: TensorFlow and LiteRT are not fork-safe."""
    return build_model(get_settings())


def top_labels(scores: np.ndarray | None, class_names: list[str], count: int = 3) -> list[str]:
    """The classes with the highest mean score over the given frames."""
    if scores is None or scores.size == 0:
        return []
    mean = scores.mean(axis=0)
    return [class_names[i] for i in np.argsort(-mean)[:count]]
