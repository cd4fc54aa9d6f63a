"""TensorFlow sessions: a SavedModel loaded with tensorflow_hub, GPU memory shared between processes.

TensorFlow is imported inside these functions, never at module level: it is not fork-safe, so it must load in
each worker process, on first use, not in the parent that forks them.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

log = logging.getLogger(__name__)


def share_gpus() -> None:
    """Let TensorFlow take GPU memory as it needs it: by default the first embedder process on a GPU takes it all
    and the next ones (``--scale embedder=N``, or ``ECHOVIDS_EMBEDDER_PROCESSES``) fail. Not exercised here: no
    machine of this project has both a GPU and TensorFlow."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        # RuntimeError: TensorFlow already initialised the GPU in this process, and its setting stands.
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    log.info("TensorFlow on %s", ", ".join(g.name for g in gpus) if gpus else "CPU (TensorFlow sees no GPU)")


def load_saved_model(handle: str) -> Any:
    """``tensorflow_hub.load`` of a URL or a local SavedModel directory; TensorFlow places it on a GPU when it
    sees one."""
    import tensorflow_hub as hub

    share_gpus()
    return hub.load(handle)
