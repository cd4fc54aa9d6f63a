"""Embedding long audio in bounded memory: frames are made and embedded a block at a time.

``embed_waveform`` replaces ``model.embed(frame_waveform(waveform))``: same vectors, but the [n, 15 600] frame
matrix (about twice the waveform, since frames overlap by half) is never built whole. ``embed_stream`` goes
further and never holds the waveform either: ffmpeg's output is read in chunks (``echovids.audio.decode_stream``),
framed across chunk boundaries, embedded and hashed as it arrives, so an hour-long file costs one chunk plus one
block of memory (plus the vectors themselves: 2 frames/s x dim x 4 bytes).

``embed_clip_stream`` is a library clip's whole ingest that way: decoded chunks -> frames -> embeddings, each
frame's loudness and best classes, and the landmarks (``echovids.landmarks.LandmarkStream``), all a block at a
time. What it keeps grows only by what a shard stores per second of audio (float16 vectors, 3 class indices per
frame, about 240 landmarks/s): 2 KB/s for a 1024-dim model, about 25 MB for 3 hours.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from echovids import class_scores
from echovids.audio_params import FRAME_SAMPLES, SAMPLE_RATE
from echovids.framing import frame_blocks
from echovids.landmarks import LandmarkStream
from services.embedder.base import AudioModel, Embedded
from services.embedder.labels import best_classes, labels_by_mean, labels_of_frames
from services.embedder.silence import mute_quiet

BLOCK_FRAMES = 256  # about 2 minutes of audio, 16 MB of frames


def embed_blocks(model: AudioModel, blocks: Iterable[np.ndarray]) -> Embedded:
    vectors: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    for block in blocks:
        part = model.embed(block)
        vectors.append(part.vectors)
        if part.scores is not None:
            scores.append(part.scores)
        del block, part  # free this block before the generator builds the next
    return Embedded(
        vectors=np.concatenate(vectors) if vectors else np.zeros((0, model.space.dim), dtype=np.float32),
        scores=np.concatenate(scores) if scores else None,
    )


def embed_waveform(model: AudioModel, waveform: np.ndarray, block_frames: int = BLOCK_FRAMES) -> Embedded:
    """``model.embed(frame_waveform(waveform))`` without the whole frame matrix; raises AudioTooShort."""
    return embed_blocks(model, frame_blocks([waveform], block_frames))


@dataclass
class StreamEmbedded:
    embedded: Embedded
    n_samples: int
    content_hash: str  # sha256 of the decoded float32 samples, as hashlib.sha256(waveform.tobytes())

    @property
    def duration_s(self) -> float:
        return self.n_samples / SAMPLE_RATE


def embed_stream(model: AudioModel, chunks: Iterable[np.ndarray], block_frames: int = BLOCK_FRAMES) -> StreamEmbedded:
    """Embed decoded chunks (``decode_stream``/``decode_bytes_stream``) as they come; raises what they raise."""
    digest = hashlib.sha256()
    count = 0

    def tee() -> Iterator[np.ndarray]:
        nonlocal count
        for chunk in chunks:
            samples = np.ascontiguousarray(chunk, dtype=np.float32)
            digest.update(samples.data)  # the buffer itself, no copy
            count += samples.size
            yield samples

    embedded = embed_blocks(model, frame_blocks(prefetch(tee(), PREFETCH_CHUNKS), block_frames))
    return StreamEmbedded(embedded=embedded, n_samples=count, content_hash=digest.hexdigest())


@dataclass
class ClipStreamed:
    """A library clip as a shard stores it, and what the catalog records of it."""

    arrays: dict[str, np.ndarray]  # vectors (float16, silence muted), hashes, times; labels and class scores
    n_samples: int
    content_hash: str  # sha256 of the decoded float32 samples, as hashlib.sha256(waveform.tobytes())
    labels: list[str]  # the clip's best classes on average (none for a model without class scores)

    @property
    def n_frames(self) -> int:
        return int(self.arrays["vectors"].shape[0])

    @property
    def duration_s(self) -> float:
        return self.n_samples / SAMPLE_RATE


def embed_clip_stream(
    model: AudioModel, chunks: Iterable[np.ndarray], silence_dbfs: float, block_frames: int = BLOCK_FRAMES
) -> ClipStreamed:
    """A library clip from decoded chunks, in memory bounded by a chunk and a block whatever its length.

    Raises what the chunks raise (AudioTooLong, UndecodableAudio), AudioTooShort and SilentAudio.
    """
    digest = hashlib.sha256()
    marks = LandmarkStream(weights=False)
    count = 0

    def tee() -> Iterator[np.ndarray]:
        # Runs on the decode thread (prefetch): hashing and landmarks overlap the model's work.
        nonlocal count
        for chunk in chunks:
            samples = np.ascontiguousarray(chunk, dtype=np.float32)
            digest.update(samples.data)
            marks.feed(samples)
            count += samples.size
            yield samples

    vectors: list[np.ndarray] = []
    loudness: list[np.ndarray] = []
    classes = ClassColumns()
    for block in frame_blocks(prefetch(tee(), PREFETCH_CHUNKS), block_frames):
        part = model.embed(block)
        vectors.append(part.vectors.astype(np.float16))
        # frame_loudness_db's measure: each frame's mean square, its zero-padded tail included.
        energy = np.einsum("ij,ij->i", block, block) / FRAME_SAMPLES
        loudness.append(10 * np.log10(np.maximum(energy, 1e-20)))
        classes.add(part.scores)
        del block, part  # free this block before the generator builds the next
    landmarks = marks.finish()
    all_vectors = np.concatenate(vectors)
    del vectors
    muted = mute_quiet(all_vectors, np.concatenate(loudness), landmarks.hashes, silence_dbfs, copy=False)
    arrays = {"vectors": muted, "hashes": landmarks.hashes, "times": landmarks.times}
    arrays.update(classes.arrays(model.class_names))
    labels = classes.labels(model.class_names)
    return ClipStreamed(arrays=arrays, n_samples=count, content_hash=digest.hexdigest(), labels=labels)


class ClassColumns:
    """A clip's per-frame labels and compact class scores (search by description), gathered a block at a time.

    Empty for a model without class scores (VGGish).
    """

    def __init__(self) -> None:
        self.best: list[np.ndarray] = []
        self.compact: list[class_scores.CompactScores] = []  # each frame's top classes, 8-bit
        self.score_sum: np.ndarray | None = None
        self.frames = 0

    def add(self, scores: np.ndarray | None) -> None:
        if scores is None:
            return
        self.best.append(best_classes(scores))
        self.compact.append(class_scores.encode(scores))
        block_sum = scores.sum(axis=0, dtype=np.float64)
        self.score_sum = block_sum if self.score_sum is None else self.score_sum + block_sum
        self.frames += scores.shape[0]

    def arrays(self, class_names: list[str]) -> dict[str, np.ndarray]:
        if not self.best:
            return {}
        return {
            **labels_of_frames(np.concatenate(self.best), class_names),
            "class_ids": np.concatenate([c.ids for c in self.compact]),
            "class_levels": np.concatenate([c.levels for c in self.compact]),
        }

    def labels(self, class_names: list[str]) -> list[str]:
        """The clip's best classes on average."""
        if self.score_sum is None or not self.frames:
            return []
        return labels_by_mean(self.score_sum / self.frames, class_names)


def embed_classes_stream(
    model: AudioModel, chunks: Iterable[np.ndarray], block_frames: int = BLOCK_FRAMES
) -> tuple[dict[str, np.ndarray], int]:
    """A clip's class columns (:class:`ClassColumns`) and its frame count, from decoded chunks in bounded memory."""
    classes = ClassColumns()
    frames = 0
    for block in frame_blocks(prefetch(iter(chunks), PREFETCH_CHUNKS), block_frames):
        part = model.embed(block)
        classes.add(part.scores)
        frames += part.vectors.shape[0]
        del block, part
    return classes.arrays(model.class_names), frames


PREFETCH_CHUNKS = 2  # decoded chunks read ahead while the model works (2 x 30 s = 4 MB)


def prefetch(items: Iterable[np.ndarray], depth: int) -> Iterator[np.ndarray]:
    """Iterate ``items`` in a background thread, ``depth`` ahead: ffmpeg decodes while the model runs.

    Exceptions from the producer (AudioTooLong, UndecodableAudio) are re-raised in the consumer, in order.
    """
    slots: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                slots.put(("item", item))
            slots.put(("end", None))
        except BaseException as error:  # handed to the consumer
            slots.put(("error", error))

    thread = threading.Thread(target=produce, name="decode-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue, then let it finish
            try:
                slots.get_nowait()
            except queue.Empty:
                thread.join(0.01)
