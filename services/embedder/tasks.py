"""Embedder tasks: decode, frame and embed a query or a library clip."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from celery import Task, shared_task
from celery.worker.control import inspect_command

from echovids import landmarks
from echovids.audio import decode_bytes
from echovids.audio_params import SAMPLE_RATE
from echovids.errors import EchovidsError
from echovids.framing import frame_waveform
from echovids.jobs import JobStore
from echovids.queues import TaskName
from echovids.schemas import ClipEmbedded, JobStatus, QueryEmbedded
from echovids.settings import get_settings
from echovids.tasks import TASK_OPTIONS, fail_job
from services.embedder.base import AudioModel, Embedded
from services.embedder.factory import get_model, model_loaded
from services.embedder.labels import frame_labels, top_labels
from services.embedder.silence import mute_silence
from services.embedder.streaming import embed_waveform

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


def clip_arrays(model: AudioModel, waveform: np.ndarray) -> tuple[dict[str, np.ndarray], Embedded]:
    """What a shard stores of a library clip (frame vectors, landmarks, per-frame labels), and the embedding."""
    # Framed and embedded a block at a time: no [n, 15600] frame matrix (2x the waveform) for long clips.
    embedded = embed_waveform(model, waveform)
    marks = landmarks.extract(waveform)
    vectors = mute_silence(embedded.vectors, waveform, marks.hashes, get_settings().silence_dbfs)
    arrays = {"vectors": vectors.astype(np.float16), "hashes": marks.hashes, "times": marks.times}
    arrays.update(frame_labels(embedded.scores, model.class_names))
    return arrays, embedded


@shared_task(name=TaskName.EMBED_QUERY, **TASK_OPTIONS)
def embed_query(self: Task, *, job_id: str, k: int) -> dict[str, Any]:
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
    return QueryEmbedded(job_id=job_id, space=model.space, n_frames=len(arrays["vectors"]), k=k).model_dump()


@shared_task(name=TaskName.EMBED_CLIP, **TASK_OPTIONS)
def embed_clip(self: Task, *, clip_id: str, job_id: str) -> dict[str, Any]:
    """Embed a library clip's upload; the shard that owns the clip indexes the vectors next."""
    store = JobStore()
    try:
        store.set_status(job_id, JobStatus.embedding)
        waveform = decode_bytes(store.get_upload(clip_id), max_seconds=get_settings().max_clip_s)
        model = get_model()
        arrays, embedded = clip_arrays(model, waveform)
    except EchovidsError as error:
        fail_job(job_id, error)
    store.put_arrays(clip_id, arrays)
    return ClipEmbedded(
        clip_id=clip_id,
        space=model.space,
        n_frames=len(embedded.vectors),
        duration_s=waveform.size / SAMPLE_RATE,
        content_hash=hashlib.sha256(np.ascontiguousarray(waveform).data).hexdigest(),
        labels=top_labels(embedded.scores, model.class_names),
    ).model_dump()
