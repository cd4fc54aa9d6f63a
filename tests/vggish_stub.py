"""A VGGish-shaped SavedModel for tests and benchmarks (no VGGish weights exist offline here).

Same signature as ``https://tfhub.dev/google/vggish/1``: float32 waveform ``[n]`` at 16 kHz -> float32
``[examples, 128]``, one row per 0.96 s example without overlap (an example needs 15 600 samples). It computes
VGGish's real front end (log-mel, offset 0.01, with tf.signal) and then a fixed random projection of each
[96, 64] patch. Three columns are set so that framing is checkable by hand:

- column 0: the example's first sample, column 1: its last (the 15 600th), column 2: the mean of its samples;
- columns 3..127: ``reshape(log_mel_patch, [6144]) @ W + b`` with W, b from ``numpy.random.default_rng(seed)``.

:func:`stub_reference` computes the same in numpy, for tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from echovids.audio_params import (
    FFT_LENGTH,
    FRAME_SAMPLES,
    MEL_BANDS,
    PATCH_ROWS,
    STFT_HOP_SAMPLES,
    STFT_WINDOW_SAMPLES,
    VGGISH_EMBEDDING_DIM,
    VGGISH_EXAMPLE_SAMPLES,
    VGGISH_LOG_OFFSET,
)
from tests import melspec


def _weights(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((PATCH_ROWS * MEL_BANDS, VGGISH_EMBEDDING_DIM - 3)) / 80.0).astype(np.float32)
    b = rng.standard_normal(VGGISH_EMBEDDING_DIM - 3).astype(np.float32)
    return w, b


def save_stub(path: Path, seed: int = 0) -> Path:
    """Write the SavedModel to ``path`` (a directory) and return it."""
    import tensorflow as tf

    w, b = _weights(seed)
    mel = melspec.mel_matrix()

    class VggishStub(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(w, trainable=False)
            self.b = tf.Variable(b, trainable=False)
            self.mel = tf.Variable(mel, trainable=False)

        @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.float32)])
        def __call__(self, waveform: tf.Tensor) -> tf.Tensor:
            spectrum = tf.abs(tf.signal.stft(waveform, STFT_WINDOW_SAMPLES, STFT_HOP_SAMPLES, FFT_LENGTH))
            log_mel = tf.math.log(tf.matmul(spectrum, self.mel) + VGGISH_LOG_OFFSET)
            patches = tf.signal.frame(log_mel, PATCH_ROWS, PATCH_ROWS, axis=0)
            flat = tf.reshape(patches, [-1, PATCH_ROWS * MEL_BANDS])
            projected = tf.matmul(flat, self.w) + self.b
            examples = tf.signal.frame(waveform, FRAME_SAMPLES, VGGISH_EXAMPLE_SAMPLES)[: tf.shape(flat)[0]]
            marks = tf.stack([examples[:, 0], examples[:, FRAME_SAMPLES - 1], tf.reduce_mean(examples, axis=1)], axis=1)
            return tf.concat([marks, projected], axis=1)

    module = VggishStub()
    tf.saved_model.save(module, str(path))
    return path


def stub_reference(frame: np.ndarray, seed: int = 0) -> np.ndarray:
    """[128] what the stub returns for one 0.975 s frame (an example), computed in numpy."""
    w, b = _weights(seed)
    patch = melspec.log_mel(frame, VGGISH_LOG_OFFSET)[:PATCH_ROWS]
    marks = np.array([frame[0], frame[FRAME_SAMPLES - 1], frame.mean()], dtype=np.float32)
    return np.concatenate([marks, patch.reshape(-1) @ w + b]).astype(np.float32)
