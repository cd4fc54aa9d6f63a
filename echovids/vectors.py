"""Vector helpers shared by the services: unit rows for cosine search."""

from __future__ import annotations

import numpy as np


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """[n, d] -> float32 unit rows, so that a dot product is a cosine; zero rows stay zero."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # A silent frame embeds to zeros; keep it zero rather than dividing by zero.
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
