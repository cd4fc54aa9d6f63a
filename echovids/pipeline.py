"""Submitting work: the Celery canvases of a search and of a library ingest, sent by task name."""

from __future__ import annotations

import hashlib
from pathlib import Path

from celery import chain, group
from celery.canvas import Signature

from echovids import catalog, clip_audio, queues
from echovids.celery_app import get_celery
from echovids.jobs import JobStore, new_id
from echovids.queues import TaskName
from echovids.schemas import ClipStatus, Job, SearchFilters
from echovids.settings import get_settings


def _sig(name: str, queue: str, **kwargs: object) -> Signature:
    return get_celery().signature(name, kwargs=kwargs, queue=queue)


def submit_search(data: bytes, k: int, store: JobStore | None = None, filters: SearchFilters | None = None) -> Job:
    """Store the job, its upload and its deadline, enqueue embed -> one task per shard -> merge -> availability.

    The last shard to answer merges. Should a shard never answer, the search worker's deadline sweep
    (services/search/deadlines.py) ends the query with a partial result. No task waits on another.
    """
    store = store or JobStore()
    job = store.create_search(k, data, wait_s=get_settings().search_timeout_s, filters=filters)
    _fan_out(job.id, _sig(TaskName.EMBED_QUERY, queues.EMBED, job_id=job.id, k=k, filters=_dumped(filters)))
    return job


def submit_text_search(text: str, k: int, store: JobStore | None = None, filters: SearchFilters | None = None) -> Job:
    """A search by description: the embedder reads the text as sound classes, then the same fan-out and merge."""
    store = store or JobStore()
    job = store.create_search(k, None, wait_s=get_settings().search_timeout_s, text=text, filters=filters)
    _fan_out(job.id, _sig(TaskName.EMBED_TEXT, queues.EMBED, job_id=job.id, k=k, text=text, filters=_dumped(filters)))
    return job


def _dumped(filters: SearchFilters | None) -> dict[str, object] | None:
    return filters.model_dump() if filters is not None else None


def _fan_out(job_id: str, first: Signature) -> None:
    settings = get_settings()
    timeout = settings.search_timeout_s
    fan_out = group(
        _sig(TaskName.SEARCH_SHARD, queues.shard_queue(i), job_id=job_id, shard=i).set(expires=timeout)
        for i in range(settings.search_shards)
    )
    chain(first, fan_out).apply_async()


def submit_class_reindex(clip_id: str, shard: int, store: JobStore | None = None) -> Job:
    """Re-index one library clip's sound class scores: its shard checks it lacks them -> the embedder reads its
    stored audio (echovids.clip_audio) -> the shard writes them beside its segment."""
    store = store or JobStore()
    job = store.create(kind="reindex")
    # ``clip``, not ``clip_id``: a failed re-index must not mark a ready clip failed (echovids.tasks.fail_job).
    chain(
        _sig(TaskName.CHECK_CLIP_CLASSES, queues.shard_queue(shard), clip=clip_id, job_id=job.id, shard=shard),
        _sig(TaskName.EMBED_CLIP_CLASSES, queues.EMBED, clip=clip_id, job_id=job.id),
        _sig(TaskName.INDEX_CLIP_CLASSES, queues.shard_queue(shard), clip=clip_id, job_id=job.id, shard=shard),
    ).apply_async()
    return job


def submit_clip(
    data: bytes,
    title: str,
    file_name: str | None = None,
    labels: list[str] | None = None,
    store: JobStore | None = None,
    clip_id: str | None = None,
) -> Job:
    """Add a catalog row (pending), store the audio, enqueue embed -> index on the clip's shard.

    With ``clip_id`` of an existing row (an ingest resuming after a crash), that row is processed again under
    its own id and shard, so a clip whose first chain did run after all is still indexed only once.
    The row's ``job_id`` is written only after the tasks were sent: a pending row without one was never sent.
    """
    store = store or JobStore()
    file_sha256 = hashlib.sha256(data).hexdigest()
    with catalog.session() as s:
        row = s.get(catalog.Clip, clip_id) if clip_id else None
        if row is None:
            clip_id = clip_id or new_id()
            shard = catalog.shard_of(clip_id, get_settings().search_shards)
            s.add(
                catalog.Clip(
                    id=clip_id,
                    title=title,
                    source_kind="file",
                    file_name=file_name,
                    labels=labels or [],
                    shard=shard,
                    status=ClipStatus.pending,
                    file_sha256=file_sha256,
                )
            )
        else:
            shard = row.shard
            row.status, row.job_id, row.file_sha256 = ClipStatus.pending, None, file_sha256
    assert clip_id is not None
    job = store.create(kind="ingest", clip_id=clip_id)
    clip_audio.save(clip_id, data, file_name)  # durable copy: the web page plays it (GET /v1/library/{id}/audio)
    store.put_upload(clip_id, data, ttl=get_settings().job_ttl_s)
    chain(
        _sig(TaskName.EMBED_CLIP, queues.EMBED, clip_id=clip_id, job_id=job.id),
        _sig(TaskName.INDEX_CLIP, queues.shard_queue(shard), clip_id=clip_id, job_id=job.id, shard=shard),
    ).apply_async()
    with catalog.session() as s:
        row = s.get(catalog.Clip, clip_id)
        if row is not None:
            row.job_id = job.id
    return job


def submit_file(path: Path, store: JobStore | None = None) -> Job:
    return submit_clip(path.read_bytes(), title=path.stem, file_name=path.name, store=store)
