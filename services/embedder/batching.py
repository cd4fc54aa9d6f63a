"""Micro-batching: frames from concurrent embed calls run through the model together.

``BatchingModel`` wraps any AudioModel. Callers queue their frames; whoever finds the model idle becomes the
leader, takes queued requests up to ``max_frames`` and runs them as one ``embed`` call, then hands each caller
its rows. While a batch runs, new requests pile up and form the next batch (group commit). The leader waits up
to ``max_wait_ms`` for more frames only when the last batch had several callers (there is load); a lone caller
never waits, so the wrapper costs nothing at low load.

What a batch buys depends on the model:
- VGGish (tensorflow_hub): one call instead of one per job; frames are packed into one waveform
  (services/embedder/models/vggish.py), so per-call overhead and, on a GPU, kernel launches are shared.
- YAMNet (LiteRT): the graph's input is fixed at one frame (resizing it breaks XNNPACK), so a batch does not
  make the model itself faster; throughput comes from ``tflite_threads`` interpreters working on the frames of
  a call in parallel. Batching across jobs still helps small queries: a 3 s query has 5 frames, below what is
  worth splitting across interpreters, while a batch of several queries keeps every interpreter busy.

Celery's prefork pool runs one task per worker process, so requests only meet in a batch when the embedder
worker runs several tasks in one process (``ECHOVIDS_EMBEDDER_POOL=threads``); in prefork the wrapper passes
calls straight through. The control command ``embed_batches`` (services/embedder/tasks.py) shows a worker's
recent calls.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from services.embedder.base import AudioModel, Embedded


@dataclass
class _Request:
    frames: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    result: Embedded | None = None
    error: BaseException | None = None


class BatchingModel:
    """An AudioModel whose ``embed`` calls from several threads are grouped into batched calls."""

    def __init__(self, model: AudioModel, max_frames: int = 64, max_wait_ms: float = 2.0) -> None:
        self.model = model
        self.space = model.space
        self.class_names = model.class_names
        self.max_frames = max(1, max_frames)
        self.max_wait_s = max(0.0, max_wait_ms) / 1000
        self._cond = threading.Condition()
        self._queue: list[_Request] = []
        self._running = False
        self._active = 0  # callers inside embed
        self._last_batch_requests = 0
        self.batches: list[tuple[int, int]] = []  # (frames, callers) of the last 1000 model calls

    def embed(self, frames: np.ndarray) -> Embedded:
        request = _Request(np.asarray(frames, dtype=np.float32))
        with self._cond:
            self._active += 1
            self._queue.append(request)
            self._cond.notify_all()
        try:
            while True:
                with self._cond:
                    while not request.done.is_set() and (self._running or not self._queue):
                        self._cond.wait()
                    if request.done.is_set():
                        break
                    batch = self._gather()
                self._run(batch)
        finally:
            with self._cond:
                self._active -= 1
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _gather(self) -> list[_Request]:
        """Called with the lock held and the model idle: claim it, wait briefly for company, take a batch."""
        self._running = True
        deadline = time.monotonic() + self.max_wait_s
        while (
            self._last_batch_requests > 1
            and sum(r.frames.shape[0] for r in self._queue) < self.max_frames
            and (left := deadline - time.monotonic()) > 0
        ):
            self._cond.wait(left)
        batch: list[_Request] = []
        size = 0
        while self._queue and (not batch or size + self._queue[0].frames.shape[0] <= self.max_frames):
            request = self._queue.pop(0)
            batch.append(request)
            size += request.frames.shape[0]
        self._last_batch_requests = len(batch)
        return batch

    def _run(self, batch: list[_Request]) -> None:
        try:
            frames = batch[0].frames if len(batch) == 1 else np.concatenate([r.frames for r in batch])
            result = self.model.embed(frames)
            self.batches = [*self.batches[-999:], (frames.shape[0], len(batch))]
            start = 0
            for request in batch:
                stop = start + request.frames.shape[0]
                request.result = Embedded(
                    vectors=result.vectors[start:stop],
                    scores=None if result.scores is None else result.scores[start:stop],
                )
                start = stop
        except BaseException as error:  # each caller re-raises it in its own thread
            for request in batch:
                request.error = error
        finally:
            for request in batch:
                request.done.set()
            with self._cond:
                self._running = False
                self._cond.notify_all()
