"""YAMNet on LiteRT: the graph cut in two, a two-interpreter session, and a pool of them that shares a call's frames.

LiteRT (and flatbuffers, which comes with it) is imported inside the functions that need it: like TensorFlow it is
not fork-safe, so it loads in each worker process, on first use.
"""

from __future__ import annotations

import itertools
import os
import queue
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from echovids.audio_params import FRAME_HOP_SAMPLES, MEL_BANDS, PATCH_HOP_ROWS, PATCH_ROWS

YAMNET_EMBEDDING_TENSOR = "yamnet_frames/global_average_pooling2d/Mean"
YAMNET_PATCH_TENSOR = "Identity_1"  # the [96, 64] log-mel patch the graph computes from its waveform input
YAMNET_PATCH_INPUT = "yamnet_frames/reshape/Reshape"  # that patch as [1, 96, 64, 1], where the network starts
YAMNET_SCORES_TENSOR = "Identity"


def yamnet_graphs(path: Path) -> tuple[bytes, bytes]:
    """yamnet.tflite cut in two: the front end (waveform -> log-mel patch) and the network (patch -> scores and
    the 1024-d embedding, which the original graph keeps internal). The weights are untouched.

    Why: frames overlap by half, so the original graph computes each log-mel row twice. Its rows depend on
    their own 25 ms of audio only (checked in tests), so a row computed once serves both frames that hold it.
    """
    from ai_edge_litert import schema_py_generated as schema

    packed = bytearray(path.read_bytes())
    front = cut(schema.ModelT.InitFromPackedBuf(packed, 0), ["input_1"], [YAMNET_PATCH_TENSOR])
    network = cut(
        schema.ModelT.InitFromPackedBuf(packed, 0),
        [YAMNET_PATCH_INPUT],
        [YAMNET_SCORES_TENSOR, YAMNET_EMBEDDING_TENSOR],
    )
    return front, network


def cut(model: Any, inputs: list[str], outputs: list[str]) -> bytes:
    """The part of a TFLite model that computes ``outputs`` from ``inputs``: the ops they need, in order."""
    import flatbuffers

    graph = model.subgraphs[0]
    index = {t.name.decode(): i for i, t in enumerate(graph.tensors)}
    sources = {index[name] for name in inputs}
    needed = {index[name] for name in outputs}
    kept = []
    for op in reversed(graph.operators):
        if any(o in needed and o not in sources for o in op.outputs):
            kept.append(op)
            needed.update(i for i in op.inputs if i >= 0)
    graph.operators = kept[::-1]
    graph.inputs = [index[name] for name in inputs]
    graph.outputs = [index[name] for name in outputs]
    builder = flatbuffers.Builder(len(graph.tensors) * 64)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _follows(frame: np.ndarray, next_frame: np.ndarray) -> bool:
    """True when ``next_frame`` starts one hop into ``frame``: the rows they share are then identical."""
    return bool(np.array_equal(frame[FRAME_HOP_SAMPLES:], next_frame[: frame.size - FRAME_HOP_SAMPLES]))


class YamnetInterpreter:
    """YAMNet's two halves on LiteRT (front end, network); not safe to share between threads."""

    def __init__(self, graphs: tuple[bytes, bytes]) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.front = Interpreter(model_content=graphs[0], num_threads=1)
        self.network = Interpreter(model_content=graphs[1], num_threads=1)
        for interpreter in (self.front, self.network):
            interpreter.allocate_tensors()
        self.waveform = self.front.get_input_details()[0]["index"]
        self.patch_out = self.front.get_output_details()[0]["index"]
        self.patch_in = self.network.get_input_details()[0]["index"]
        outputs = {o["name"]: o["index"] for o in self.network.get_output_details()}
        self.scores = outputs[YAMNET_SCORES_TENSOR]
        self.embedding = outputs[YAMNET_EMBEDDING_TENSOR]

    def patch(self, frame: np.ndarray) -> np.ndarray:
        self.front.set_tensor(self.waveform, frame.reshape(1, -1))
        self.front.invoke()
        return np.asarray(self.front.get_tensor(self.patch_out))

    def patches(self, frames: np.ndarray) -> np.ndarray:
        """[n, 96, 64] log-mel patches; where frame i+1 starts one hop after frame i (same samples), the patch
        of frame i+1 is made of halves of its neighbours' patches instead of being computed."""
        n = frames.shape[0]
        out = np.empty((n, PATCH_ROWS, MEL_BANDS), dtype=np.float32)
        i, have = 0, False  # have: out[i] was computed by the step before
        while i < n:
            if not have:
                out[i] = self.patch(frames[i])
            have = i + 2 < n and _follows(frames[i], frames[i + 1]) and _follows(frames[i + 1], frames[i + 2])
            if have:
                out[i + 2] = self.patch(frames[i + 2])
                out[i + 1, :PATCH_HOP_ROWS] = out[i, PATCH_HOP_ROWS:]
                out[i + 1, PATCH_HOP_ROWS:] = out[i + 2, :PATCH_HOP_ROWS]
            i += 2 if have else 1
        return out

    def run(self, frames: np.ndarray, vectors: np.ndarray, scores: np.ndarray) -> None:
        # The input is fixed at one frame: resizing it to a batch makes XNNPACK fail, so frames go one by one
        # (invoke releases the GIL, so several interpreters run in parallel threads).
        patches = self.patches(frames)
        for i in range(frames.shape[0]):
            self.network.set_tensor(self.patch_in, patches[i].reshape(1, PATCH_ROWS, -1, 1))
            self.network.invoke()
            vectors[i] = self.network.get_tensor(self.embedding)[0]
            scores[i] = self.network.get_tensor(self.scores)[0]


def idle_cores() -> int:
    """Cores with nothing to run at this instant, besides the calling thread (Linux: the runnable count in
    /proc/loadavg, which includes the caller); every core but one where that is unknown."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        runnable = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return cores - 1
    return max(0, cores - runnable)


class InterpreterPool:
    """``threads`` interpreters of one thread each share the frames of a call (measured faster than one
    interpreter with several threads: the model is small and per-invoke overhead dominates). Concurrent callers
    borrow interpreters from the same pool.
    """

    MIN_FRAMES_PER_THREAD = 8  # below this, splitting a call costs more than it saves
    # Up to this, a call is latency-bound (a query of up to 30 s) and always split. A longer one is bulk work
    # (a library clip, in blocks of 256 frames), split only over cores that are idle right now: during a bulk
    # ingest the other embedder processes keep them busy, and splitting then only makes threads contend
    # (measured: 9.5 h/min always split, 10.9 unsplit), while a lone long file still gets every core.
    MAX_FRAMES_ALWAYS_SPLIT = 64

    def __init__(self, graphs: tuple[bytes, bytes], threads: int = 1) -> None:
        self.threads = max(1, threads)
        self._pool: queue.SimpleQueue[YamnetInterpreter] = queue.SimpleQueue()
        for _ in range(self.threads):
            self._pool.put(YamnetInterpreter(graphs))
        self._executor = ThreadPoolExecutor(self.threads, "yamnet") if self.threads > 1 else None

    def _run(self, frames: np.ndarray, vectors: np.ndarray, scores: np.ndarray) -> None:
        interpreter = self._pool.get()
        try:
            interpreter.run(frames, vectors, scores)
        finally:
            self._pool.put(interpreter)

    def run(self, frames: np.ndarray, vectors: np.ndarray, scores: np.ndarray) -> None:
        """Fill ``vectors`` and ``scores`` (raw embeddings and class scores) for ``frames``, split over the pool."""
        n = frames.shape[0]
        parts = min(self.threads, n // self.MIN_FRAMES_PER_THREAD)
        if n > self.MAX_FRAMES_ALWAYS_SPLIT:
            parts = min(parts, 1 + idle_cores())
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

    def patch(self, frame: np.ndarray) -> np.ndarray:
        """The [96, 64] log-mel patch of one frame, from whichever interpreter is free."""
        interpreter = self._pool.get()
        try:
            return interpreter.patch(frame).copy()
        finally:
            self._pool.put(interpreter)
