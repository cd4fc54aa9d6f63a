"""The model a worker process embeds with: chosen by settings, loaded on first use, one per process."""

from __future__ import annotations

import threading

from echovids.settings import Settings, get_settings
from services.embedder.base import AudioModel
from services.embedder.batching import BatchingModel
from services.embedder.models.vggish import VggishHub
from services.embedder.models.yamnet import YamnetTflite


def build_model(settings: Settings) -> AudioModel:
    if settings.embedder == "yamnet":
        return YamnetTflite(settings.model_dir, threads=settings.tflite_threads)
    return VggishHub(settings.vggish_handle, pca_params=settings.vggish_pca_params)


_loading = threading.Lock()
_model: AudioModel | None = None


def get_model() -> AudioModel:
    """Loaded on first use inside the worker process: TensorFlow and LiteRT are not fork-safe.

    Wrapped for micro-batching: embed calls from concurrent tasks of one process share model calls. The lock
    matters under the threads pool, where the first jobs arrive together: one model, not one per thread.
    """
    global _model
    with _loading:
        if _model is None:
            settings = get_settings()
            _model = BatchingModel(
                build_model(settings),
                max_frames=settings.embed_batch_frames,
                max_wait_ms=settings.embed_batch_wait_ms,
            )
        return _model


def model_loaded() -> bool:
    """Whether this process has loaded its model (asking must not load it: see embed_batches)."""
    return _model is not None
