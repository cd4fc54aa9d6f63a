"""Synthetic frames shaped like a sound library's, for the benchmarks that need millions of them without audio.

Three levels, as in a sound library: ~500 sound classes of Zipf-distributed popularity; clips of 20 frames (10 s
at YAMNet's hop), each clip a point near its class centre; frames near their clip's centre. The structure lives
in a 96-dimensional subspace embedded by a random orthonormal map, plus isotropic noise in all dimensions, then
L2-normalised (the index scores dot products of unit vectors = cosine). A frame's nearest neighbours are mostly
its own clip's frames, then its class's, so recall@10 measures an index, not the order of near-ties.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from echovids.vectors import l2_normalise

LATENT = 96
CLASSES = 512
FRAMES_PER_CLIP = 20
POPULARITY_EXPONENT = 0.8
CLIP_SPREAD = 0.55  # a clip's centre about its class centre, in the latent space
FRAME_SPREAD = 0.35  # a frame about its clip's centre
NOISE = 0.25  # isotropic, in every dimension


@dataclass(frozen=True)
class SoundSpace:
    basis: np.ndarray  # LATENT x dim, orthonormal rows
    classes: np.ndarray  # CLASSES x LATENT, unit class centres
    popularity: np.ndarray  # CLASSES, sums to 1

    @classmethod
    def draw(cls, rng: np.random.Generator, dim: int) -> SoundSpace:
        basis = np.linalg.qr(rng.standard_normal((dim, LATENT)))[0].T.astype(np.float32)
        classes = l2_normalise(rng.standard_normal((CLASSES, LATENT)).astype(np.float32))
        popularity = 1.0 / np.arange(1, CLASSES + 1) ** POPULARITY_EXPONENT
        return cls(basis, classes, popularity / popularity.sum())

    @property
    def dim(self) -> int:
        return self.basis.shape[1]

    def clip_classes(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.choice(CLASSES, size=n, p=self.popularity)

    def clip_centres(self, rng: np.random.Generator, classes: np.ndarray) -> np.ndarray:
        g = rng.standard_normal((len(classes), LATENT)).astype(np.float32)
        return self.classes[classes] + CLIP_SPREAD * g / np.sqrt(LATENT)

    def frames(self, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
        """One unit frame near each of ``centres`` (repeat a clip's centre for each of its frames)."""
        g = rng.standard_normal((len(centres), LATENT)).astype(np.float32)
        x = (centres + FRAME_SPREAD * g / np.sqrt(LATENT)) @ self.basis
        x += (NOISE / np.sqrt(self.dim)) * rng.standard_normal(x.shape, dtype=np.float32)
        return l2_normalise(x)
