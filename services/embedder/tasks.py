"""Embedder tasks: decode, frame and embed a query or a library clip; read a text query as sound classes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from celery import Task, shared_task
from celery.worker.control import inspect_command

from echovids import clip_audio, landmarks
from echovids.audio import decode_bytes, decode_bytes_stream, decode_file_stream
from echovids.audio_params import MIN_QUERY_SAMPLES
from echovids.errors import EchovidsError, NotFound, TextSearchUnavailable
from echovids.framing import frame_waveform, too_short
from echovids.jobs import JobStore
from echovids.queues import TaskName
from echovids.schemas import ClipEmbedded, JobStatus, QueryEmbedded, SearchFilters, TextClass
from echovids.settings import get_settings
from echovids.tasks import TASK_OPTIONS, fail_job
from echovids.text_classes import ClassMapper, default_mapper
from services.embedder.base import AudioModel
from services.embedder.factory import get_model, model_loaded
from services.embedder.silence import mute_silence
from services.embedder.streaming import ClipStreamed, embed_classes_stream, embed_clip_stream

_side = ThreadPoolExecutor(1, thread_name_prefix="landmarks")


@inspect_command()
def embed_batches(state: Any) -> dict[str, Any]:
    """This worker's last model calls as [frames, jobs] pairs (``control.broadcast("embed_batches", reply=True)``).

    Answered by the worker's main process: the model's own under the threads pool; under prefork the model
    lives in the children, so the answer says it is not loaded here.
    """
    loaded = model_loaded()
    batches = getattr(get_model(), "batches", []) if loaded else []
    return {"pool": get_settings().embedder_pool, "loaded": loaded, "batches": batches}


def query_arrays(model: AudioModel, waveform: np.ndarray) -> dict[str, np.ndarray]:
    """What a search needs of a query: its frame vectors (silence muted) and its landmarks."""
    if waveform.size < MIN_QUERY_SAMPLES:
        raise too_short(waveform.size, MIN_QUERY_SAMPLES)
    # The landmarks need only the waveform: they are taken on a side thread while the model runs.
    marks_later = _side.submit(landmarks.extract_query, waveform)
    embedded = model.embed(frame_waveform(waveform))
    marks = marks_later.result()
    vectors = mute_silence(embedded.vectors, waveform, marks.hashes, get_settings().silence_dbfs)
    return {
        "vectors": vectors.astype(np.float16),
        "hashes": marks.hashes,
        "times": marks.times,
        "weights": marks.weights,
    }


def clip_arrays(model: AudioModel, waveform: np.ndarray) -> tuple[dict[str, np.ndarray], ClipStreamed]:
    """What a shard stores of a library clip already decoded (frame vectors, landmarks, per-frame labels)."""
    clip = embed_clip_stream(model, [waveform], get_settings().silence_dbfs)
    return clip.arrays, clip


def embed_upload(model: AudioModel, data: bytes) -> ClipStreamed:
    """A library clip's uploaded file, decoded, embedded and fingerprinted a block at a time."""
    settings = get_settings()
    chunks = decode_bytes_stream(data, max_seconds=settings.max_clip_s)
    return embed_clip_stream(model, chunks, settings.silence_dbfs)


def text_mapper() -> ClassMapper:
    """This process's text-to-class mapper (built on its first text query: ~2 s, then ~2 ms a text)."""
    settings = get_settings()
    class_map = settings.model_dir / "yamnet_class_map.csv"
    if not class_map.is_file() or not settings.ontology_path.is_file():
        raise TextSearchUnavailable(
            f"Search by description needs YAMNet's class map ({class_map}) and the AudioSet ontology "
            f"({settings.ontology_path})."
        )
    return default_mapper(class_map, settings.ontology_path)


def text_arrays(mapper: ClassMapper, text: str) -> tuple[dict[str, np.ndarray], list[TextClass]]:
    """A description as the shards search it (class ids and weights), and as the job record shows it."""
    weights = mapper.map(text)
    arrays: dict[str, np.ndarray] = {
        "class_ids": np.array([w.index for w in weights], dtype=np.uint16),
        "class_weights": np.array([w.weight for w in weights], dtype=np.float32),
    }
    return arrays, [TextClass(id=w.mid, name=w.name, weight=round(w.weight, 4)) for w in weights]


@shared_task(name=TaskName.EMBED_QUERY, **TASK_OPTIONS)
def embed_query(self: Task, *, job_id: str, k: int, filters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Embed an uploaded query and take its landmarks; both go to Redis for the search fan-out."""
    store = JobStore()
    try:
        store.set_status(job_id, JobStatus.embedding)
        waveform = decode_bytes(store.get_upload(job_id), max_seconds=get_settings().max_query_s)
        model = get_model()
        arrays = query_arrays(model, waveform)
    except EchovidsError as error:
        fail_job(job_id, error)
    store.put_arrays(job_id, arrays, audio=waveform)  # the merge settles exact matches against it
    store.set_status(job_id, JobStatus.searching)
    return QueryEmbedded(
        job_id=job_id,
        space=model.space,
        n_frames=len(arrays["vectors"]),
        k=k,
        filters=SearchFilters.model_validate(filters) if filters else None,
    ).model_dump()


@shared_task(name=TaskName.EMBED_TEXT, **TASK_OPTIONS)
def embed_text(self: Task, *, job_id: str, k: int, text: str, filters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a description as AudioSet classes with weights; they go to Redis for the search fan-out."""
    store = JobStore()
    try:
        store.set_status(job_id, JobStatus.embedding)
        arrays, classes = text_arrays(text_mapper(), text)
    except EchovidsError as error:
        fail_job(job_id, error)
    store.put_arrays(job_id, arrays)
    store.update(job_id, status=JobStatus.searching, text_classes=classes)
    return QueryEmbedded(
        job_id=job_id,
        n_frames=0,
        k=k,
        text=True,
        filters=SearchFilters.model_validate(filters) if filters else None,
    ).model_dump()


@shared_task(name=TaskName.EMBED_CLIP, **TASK_OPTIONS)
def embed_clip(self: Task, *, clip_id: str, job_id: str) -> dict[str, Any]:
    """Embed a library clip's upload; the shard that owns the clip indexes the vectors next.

    Decoded, framed, embedded and fingerprinted a block at a time: memory grows with the length only by what the
    shard stores (docs/benchmarks.md, "Long library files").
    """
    store = JobStore()
    try:
        store.set_status(job_id, JobStatus.embedding)
        model = get_model()
        clip = embed_upload(model, store.get_upload(clip_id))
    except EchovidsError as error:
        fail_job(job_id, error)
    store.put_arrays(clip_id, clip.arrays)
    return ClipEmbedded(
        clip_id=clip_id,
        space=model.space,
        n_frames=clip.n_frames,
        duration_s=clip.duration_s,
        content_hash=clip.content_hash,
        labels=clip.labels,
    ).model_dump()


@shared_task(name=TaskName.EMBED_CLIP_CLASSES, **TASK_OPTIONS)
def embed_clip_classes(self: Task, *_previous: Any, clip: str, job_id: str) -> dict[str, Any]:
    """A re-index: the class scores of a clip indexed before segments carried them, from its stored audio."""
    store = JobStore()
    try:
        store.set_status(job_id, JobStatus.embedding)
        path = clip_audio.find(clip)
        if path is None:
            raise NotFound(f"No stored audio for clip {clip!r} (ingested before audio was kept): ingest it again.")
        model = get_model()
        if not model.class_names:
            raise TextSearchUnavailable(f"The model {model.space.model!r} gives no sound class scores.")
        # Streamed like an ingest: a stored clip may last hours, and memory must not grow with it.
        chunks = decode_file_stream(path, max_seconds=get_settings().max_clip_s)
        arrays, frames = embed_classes_stream(model, chunks)
    except EchovidsError as error:
        fail_job(job_id, error)
    store.put_arrays(job_id, arrays)  # under the job: its settling drops them
    return {"clip": clip, "frames": frames}
