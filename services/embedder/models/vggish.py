"""VGGish through tensorflow_hub, frame-aligned with Echovids' 0.48 s hop, with AudioSet's optional postprocess.

How our frames are fed. The hub module takes a whole 16 kHz waveform ``[n]`` and cuts it into 0.96 s examples
*without overlap* (each example needs 15 600 samples: 96 STFT hops of 10 ms plus the 25 ms window tail), while
Echovids frames every 0.48 s (``echovids.audio_params.FRAME_HOP_S``) and matches by frame index * FRAME_HOP_S.
Running the module once per frame would be exact but costs one call per 0.48 s of audio. Instead ``embed`` *packs*
frames into one waveform:

- frames that follow each other in a file (frame i+1 starts 0.48 s after frame i) form a run; the run's even
  frames, laid end to end, are exactly the waveform whose 0.96 s examples are those frames, and the odd frames
  likewise (the second waveform starts 0.48 s later). So a run of m frames becomes two stretches of audio;
- each stretch starts on a 0.96 s slot boundary of the packed waveform; its last example's 0.015 s tail spills
  into the next slot, whose example is discarded;
- one model call embeds the whole packed waveform, and rows are put back in frame order.

So every output row is the module's embedding of exactly that frame's 0.975 s of samples (what a per-frame call
would give), the time base stays ``index * FRAME_HOP_S``, and a batch of frames from one or many jobs costs one call
whose only waste is one discarded example between consecutive stretches (a run of frames makes two stretches).
GPU: TensorFlow places the module on a GPU when it sees one (memory taken as needed, so several processes share
it: ``sessions/tensorflow.py``); nothing else here is CPU-specific.

AudioSet postprocess (``pca_params``): PCA whitening with the published ``vggish_pca_params.npz``
(``pca_eigen_vectors`` [128, 128], ``pca_means`` [128]), clip to [-2, 2] and quantise to uint8 with
``(x + 2) * 255 / 4`` -- the arithmetic of Google's ``vggish_postprocess.py``, so that vectors compare with
AudioSet's released features (which are those uint8 values). Search vectors are then the dequantised values,
L2-normalised; ``echovids.vectors.dequantize`` turns AudioSet's released bytes into the same space.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import numpy as np

from echovids.audio_params import (
    FRAME_HOP_SAMPLES,
    FRAME_SAMPLES,
    QUANTIZE_MAX,
    QUANTIZE_MIN,
    VGGISH_EMBEDDING_DIM,
    VGGISH_EXAMPLE_SAMPLES,
    VGGISH_EXAMPLE_TAIL_SAMPLES,
)
from echovids.schemas import EmbeddingSpace
from echovids.vectors import dequantize, l2_normalise
from services.embedder.base import Embedded
from services.embedder.sessions.tensorflow import load_saved_model

PCA_EIGEN_VECTORS = "pca_eigen_vectors"
PCA_MEANS = "pca_means"

assert VGGISH_EXAMPLE_SAMPLES == 2 * FRAME_HOP_SAMPLES, "packing assumes frames every half example"


class PcaParams:
    """AudioSet's PCA + quantisation (vggish_postprocess.Postprocessor), in numpy."""

    def __init__(self, path: Path) -> None:
        with np.load(path) as params:
            self.eigen_vectors = np.asarray(params[PCA_EIGEN_VECTORS], dtype=np.float64)
            self.means = np.asarray(params[PCA_MEANS], dtype=np.float64).reshape(-1, 1)
        if self.eigen_vectors.shape != (VGGISH_EMBEDDING_DIM, VGGISH_EMBEDDING_DIM) or self.means.shape != (
            VGGISH_EMBEDDING_DIM,
            1,
        ):
            raise ValueError(
                f"{path}: expected {PCA_EIGEN_VECTORS} [128, 128] and {PCA_MEANS} [128], got "
                f"{self.eigen_vectors.shape} and {self.means.shape[:1]}"
            )
        self.digest = hashlib.sha256(self.eigen_vectors.tobytes() + self.means.tobytes()).hexdigest()[:8]

    def postprocess(self, embeddings: np.ndarray) -> np.ndarray:
        """[n, 128] raw VGGish embeddings -> [n, 128] uint8, exactly as AudioSet's features were made."""
        pca_applied = (self.eigen_vectors @ (np.asarray(embeddings, dtype=np.float64).T - self.means)).T
        clipped = np.clip(pca_applied, QUANTIZE_MIN, QUANTIZE_MAX)
        quantized = (clipped - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN))
        return quantized.astype(np.uint8)


def contiguous_runs(frames: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges of frames that follow each other at FRAME_HOP_SAMPLES in one waveform."""
    n = frames.shape[0]
    if n == 0:
        return []
    overlap = FRAME_SAMPLES - FRAME_HOP_SAMPLES
    follows = np.all(frames[1:, :overlap] == frames[:-1, FRAME_HOP_SAMPLES:], axis=1) if n > 1 else np.zeros(0, bool)
    runs: list[tuple[int, int]] = []
    start = 0
    for i, joined in enumerate(follows, start=1):
        if not joined:
            runs.append((start, i))
            start = i
    runs.append((start, n))
    return runs


def pack_frames(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One waveform whose 0.96 s examples include every frame; returns it and, per frame, its example index."""
    stretches: list[list[int]] = []  # frame indices whose examples sit back to back
    for start, stop in contiguous_runs(frames):
        stretches += [list(range(start, stop, 2)), list(range(start + 1, stop, 2))]
    stretches = [s for s in stretches if s]
    slots = sum(len(s) for s in stretches) + len(stretches) - 1  # one discarded slot between stretches
    packed = np.zeros(slots * VGGISH_EXAMPLE_SAMPLES + VGGISH_EXAMPLE_TAIL_SAMPLES, dtype=np.float32)
    row_of = np.empty(frames.shape[0], dtype=np.int64)
    slot = 0
    for stretch in stretches:
        for index in stretch:
            # Consecutive frames of a stretch agree on the overlapping 240 samples, so writing whole frames
            # in order leaves every example equal to its frame.
            packed[slot * VGGISH_EXAMPLE_SAMPLES : slot * VGGISH_EXAMPLE_SAMPLES + FRAME_SAMPLES] = frames[index]
            row_of[index] = slot
            slot += 1
        slot += 1  # the slot the stretch's tail spills into
    return packed, row_of


def space_version(handle: str, pca: PcaParams | None) -> str:
    path = Path(handle)
    if path.is_dir():
        graph = path / "saved_model.pb"
        digest = hashlib.sha256(graph.read_bytes()).hexdigest()[:12] if graph.exists() else path.name
        version = f"local-{digest}"
    else:
        version = "hub-" + handle.rstrip("/").rsplit("/", 1)[-1]
    return version + (f"+pca8-{pca.digest}" if pca else "")


class VggishHub:
    """VGGish loaded with ``tensorflow_hub.load`` from a URL or a local SavedModel directory."""

    def __init__(self, handle: str, pca_params: Path | None = None, max_frames_per_call: int = 256) -> None:
        self.handle = handle
        self._module: Any = load_saved_model(handle)
        self._pca = PcaParams(pca_params) if pca_params is not None else None
        self._lock = threading.Lock()
        self.max_frames_per_call = max_frames_per_call
        self.class_names: list[str] = []
        self.space = EmbeddingSpace(model="vggish", version=space_version(handle, self._pca), dim=VGGISH_EMBEDDING_DIM)
        self.calls = 0  # model invocations, for tests and benchmarks

    def raw_embeddings(self, frames: np.ndarray) -> np.ndarray:
        """[n, 128] float32: the module's output for each 0.975 s frame, in order (no postprocess)."""
        frames = np.asarray(frames, dtype=np.float32)
        out = np.empty((frames.shape[0], VGGISH_EMBEDDING_DIM), dtype=np.float32)
        for start in range(0, frames.shape[0], self.max_frames_per_call):
            chunk = frames[start : start + self.max_frames_per_call]
            packed, row_of = pack_frames(chunk)
            with self._lock:
                result = np.asarray(self._module(packed))
                self.calls += 1
            if result.ndim != 2 or result.shape[1] != VGGISH_EMBEDDING_DIM or result.shape[0] <= row_of.max():
                raise RuntimeError(
                    f"{self.handle}: expected [>={row_of.max() + 1}, 128] embeddings for "
                    f"{packed.size} samples, got {list(result.shape)}"
                )
            out[start : start + chunk.shape[0]] = result[row_of]
        return out

    def embed(self, frames: np.ndarray) -> Embedded:
        if frames.shape[0] == 0:
            return Embedded(vectors=np.zeros((0, VGGISH_EMBEDDING_DIM), dtype=np.float32), scores=None)
        raw = self.raw_embeddings(frames)
        vectors = dequantize(self._pca.postprocess(raw)) if self._pca is not None else raw
        return Embedded(vectors=l2_normalise(vectors), scores=None)

    def postprocess(self, raw: np.ndarray) -> np.ndarray:
        """AudioSet uint8 features for raw embeddings; needs ``pca_params``."""
        if self._pca is None:
            raise ValueError("No PCA parameters: set ECHOVIDS_VGGISH_PCA_PARAMS to vggish_pca_params.npz.")
        return self._pca.postprocess(raw)
