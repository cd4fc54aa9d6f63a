"""What every embedding model is to the rest of the embedder: frames in, unit vectors (and maybe scores) out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from echovids.schemas import EmbeddingSpace


@dataclass
class Embedded:
    """Per-frame output: L2-normalised embeddings and, when the model has them, AudioSet class scores."""

    vectors: np.ndarray  # [n, dim] float32, unit length
    scores: np.ndarray | None  # [n, classes] float32


class AudioModel(Protocol):
    space: EmbeddingSpace
    class_names: list[str]

    def embed(self, frames: np.ndarray) -> Embedded: ...
