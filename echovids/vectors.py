"""Vector arithmetic shared by the embedder, the importers and the search: unit rows, AudioSet's 8-bit features."""

from __future__ import annotations

import numpy as np

from echovids.audio_params import QUANTIZE_MAX, QUANTIZE_MIN


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """[n, d] -> float32 unit rows, so that a dot product is a cosine; zero rows stay zero."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # A silent frame embeds to zeros; keep it zero rather than dividing by zero.
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def dequantize(quantized: np.ndarray) -> np.ndarray:
    """uint8 postprocessed VGGish features (ours or AudioSet's) back to the whitened floats in [-2, 2]:
    x * 4/255 - 2, Google's vggish_postprocess inverted."""
    scale = (QUANTIZE_MAX - QUANTIZE_MIN) / 255.0
    return (np.asarray(quantized, dtype=np.float32) * np.float32(scale) + np.float32(QUANTIZE_MIN)).astype(np.float32)


def int8_rows(vectors: np.ndarray, chunk: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """[n, d] -> (int8 codes, float32 scales): row i is ``codes[i] * scales[i]``, each entry within half a step
    (its row's largest magnitude / 127); a zero row stays zero (scale 0). Taken ``chunk`` rows at a time, so a
    large float16 map is never converted whole."""
    n, d = vectors.shape
    codes = np.empty((n, d), dtype=np.int8)
    scales = np.empty(n, dtype=np.float32)
    for start in range(0, n, chunk):
        block = np.asarray(vectors[start : start + chunk], dtype=np.float32)
        peak = np.abs(block).max(axis=1) if d else np.zeros(block.shape[0], np.float32)
        step = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
        codes[start : start + chunk] = np.rint(block / step[:, None]).astype(np.int8)
        scales[start : start + chunk] = np.where(peak > 0, step, 0.0)
    return codes, scales


class Projection:
    """Unit frames onto a library's principal axes, plus one axis for what lies off them.

    ``axes`` [dim, dims] are the top eigenvectors of the frames' (uncentred) second moment, so a dot product
    of two projected frames keeps most of the original's with a fraction of the dimensions (YAMNet's frames hold
    ~99 % of their energy in 256 of 1024, docs/benchmarks.md "Projected frames"). The last coordinate is the norm
    of the rest, so a unit frame stays a unit vector: its cosines keep their scale, in every shard alike.
    """

    def __init__(self, axes: np.ndarray) -> None:
        self.axes = np.ascontiguousarray(axes, dtype=np.float32)

    @property
    def dim(self) -> int:
        """The frames' own dimension."""
        return int(self.axes.shape[0])

    @property
    def dims(self) -> int:
        """The projected frames' dimension (the axes and the rest)."""
        return int(self.axes.shape[1]) + 1

    @classmethod
    def fit(cls, frames: np.ndarray, axes: int, seed: int = 0) -> Projection:
        """The span of the ``axes`` principal axes of ``frames`` (a sample of a library's, float32 or float16), in a
        random orthonormal basis of it.

        Why rotated: on the principal axes themselves the first few coordinates carry most of a frame and the last
        almost nothing, and ScaNN quantises coordinates two by two with 16 centres a pair: the first pairs were
        quantised coarsely, and re-scoring 100 candidates found 0.90 of the top 10 (docs/benchmarks.md,
        "Projected frames"). A rotation keeps every dot product and spreads the energy evenly over the pairs, as
        OPQ's does; the int8 codes (a step per row set by its largest entry) gain too."""
        x = np.asarray(frames, dtype=np.float32)
        _, vectors = np.linalg.eigh((x.T @ x).astype(np.float64))
        rotation, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((axes, axes)))
        return cls(vectors[:, ::-1][:, :axes] @ rotation)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """[n, dim] -> [n, dims] float32; a zero frame stays zero."""
        x = np.asarray(frames, dtype=np.float32)
        on = x @ self.axes
        rest = np.einsum("ij,ij->i", x, x) - np.einsum("ij,ij->i", on, on)
        return np.concatenate([on, np.sqrt(np.maximum(rest, 0.0))[:, None]], axis=1)
