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
