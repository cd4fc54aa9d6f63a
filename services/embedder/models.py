"""Audio embedding models: one class per model, loaded lazily once per worker process."""

from __future__ import annotations

import csv
import itertools
import queue
from concurrent.futures import ThreadPoolExecutor
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


def yamnet_with_embedding_output(path: Path) -> bytes:
    """yamnet.tflite with the 1024-d embedding added to the graph's outputs.

    The embedding is an intermediate tensor; reading it otherwise needs ``experimental_preserve_all_tensors``,
    which disables arena reuse and costs about 15 % of throughput. The weights are untouched.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
    graph = model.subgraphs[0]
    names = [t.name.decode() for t in graph.tensors]
    embedding = names.index(YAMNET_EMBEDDING_TENSOR)
    if embedding not in list(graph.outputs):
        graph.outputs = [*list(graph.outputs), embedding]
    builder = flatbuffers.Builder(len(names) * 64)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


class _YamnetInterpreter:
    """One LiteRT interpreter over YAMNet; not safe to share between threads."""

    def __init__(self, content: bytes, threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=content, num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        outputs = {o["name"]: o["index"] for o in self.interpreter.get_output_details()}
        self.scores = outputs["Identity"]
        self.patch = outputs["Identity_1"]
        self.embedding = outputs[YAMNET_EMBEDDING_TENSOR]

    def run(self, frames: np.ndarray, vectors: np.ndarray, scores: np.ndarray) -> None:
        # The input is fixed at [1, 15600]: resizing it to a batch makes XNNPACK fail, so frames go one by one
        # (invoke releases the GIL, so several interpreters run in parallel threads).
        for i in range(frames.shape[0]):
            self.interpreter.set_tensor(self.input, frames[i : i + 1])
            self.interpreter.invoke()
            vectors[i] = self.interpreter.get_tensor(self.embedding)[0]
            scores[i] = self.interpreter.get_tensor(self.scores)[0]


class YamnetTflite:
    """Google's YAMNet on LiteRT: 1024-d embedding and 521 AudioSet scores per 0.975 s frame.

    ``threads`` interpreters of one thread each share the frames of a call (measured faster than one
    interpreter with several threads: the model is small and per-invoke overhead dominates). Concurrent callers
    borrow interpreters from the same pool.
    """

    MIN_FRAMES_PER_THREAD = 8  # below this, splitting a call costs more than it saves

    def __init__(self, model_dir: Path, threads: int = 1) -> None:
        path = model_dir / "yamnet.tflite"
        if not path.exists():
            raise FileNotFoundError(f"YAMNet weights not found at {path}; set ECHOVIDS_MODEL_DIR.")
        self.threads = max(1, threads)
        content = yamnet_with_embedding_output(path)
        self._pool: queue.SimpleQueue[_YamnetInterpreter] = queue.SimpleQueue()
        for _ in range(self.threads):
            self._pool.put(_YamnetInterpreter(content, threads=1))
        self._executor = ThreadPoolExecutor(self.threads, "yamnet") if self.threads > 1 else None
        self.class_names = load_class_names(model_dir / "yamnet_class_map.csv")
        self.space = EmbeddingSpace(model="yamnet", version="tflite-1", dim=1024)

    def _run(self, frames: np.ndarray, vectors: np.ndarray, scores: np.ndarray) -> None:
        interpreter = self._pool.get()
        try:
            interpreter.run(frames, vectors, scores)
        finally:
            self._pool.put(interpreter)

    def embed(self, frames: np.ndarray) -> Embedded:
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        n = frames.shape[0]
        vectors = np.empty((n, 1024), dtype=np.float32)
        scores = np.empty((n, len(self.class_names)), dtype=np.float32)
        parts = min(self.threads, n // self.MIN_FRAMES_PER_THREAD)
        if parts <= 1 or self._executor is None:
            self._run(frames, vectors, scores)
        else:
            bounds = np.linspace(0, n, parts + 1).astype(int)
            futures = [
                self._executor.submit(self._run, frames[a:b], vectors[a:b], scores[a:b])
                for a, b in itertools.pairwise(bounds)
            ]
            for future in futures:
                future.result()
        return Embedded(vectors=l2_normalise(vectors), scores=scores)

    def log_mel_patch(self, frame: np.ndarray) -> np.ndarray:
        """The [96, 64] log-mel patch YAMNet computes for one frame (for front-end tests)."""
        interpreter = self._pool.get()
        try:
            interpreter.interpreter.set_tensor(interpreter.input, frame.reshape(1, -1).astype(np.float32))
            interpreter.interpreter.invoke()
            return np.array(interpreter.interpreter.get_tensor(interpreter.patch))
        finally:
            self._pool.put(interpreter)


def build_model(settings: Settings) -> AudioModel:
    if settings.embedder == "yamnet":
        return YamnetTflite(settings.model_dir, threads=settings.tflite_threads)
    from services.embedder.vggish import VggishHub

    return VggishHub(settings.vggish_handle, pca_params=settings.vggish_pca_params)


@lru_cache(maxsize=1)
def get_model() -> AudioModel:
    """Loaded on first use inside the worker process: TensorFlow and LiteRT are not fork-safe.

    Wrapped for micro-batching: embed calls from concurrent tasks of one process share model calls.
    """
    from services.embedder.batching import BatchingModel

    settings = get_settings()
    return BatchingModel(
        build_model(settings), max_frames=settings.embed_batch_frames, max_wait_ms=settings.embed_batch_wait_ms
    )


def top_labels(scores: np.ndarray | None, class_names: list[str], count: int = 3) -> list[str]:
    """The classes with the highest mean score over the given frames."""
    if scores is None or scores.size == 0:
        return []
    mean = scores.mean(axis=0)
    return [class_names[i] for i in np.argsort(-mean)[:count]]
