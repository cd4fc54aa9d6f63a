"""The library: what the HTTP API and the CLI share about catalog clips (listing, adding once, deleting)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, Field
from sqlalchemy import Text, cast, func, or_, select

from echovids import catalog, clip_audio, queues
from echovids.broker import jobs_with_messages
from echovids.errors import IndexDamaged, NotFound, ProcessingFailed
from echovids.jobs import JobStore
from echovids.labels import label_ids, label_name
from echovids.queues import TaskName
from echovids.schemas import ClipStatus, ErrorBody, Job, JobStatus, Source
from echovids.settings import get_settings

log = logging.getLogger(__name__)


class LibraryClip(BaseModel):
    clip_id: str
    title: str
    labels: list[str] = Field(default=[], description="AudioSet class names (or the user's own labels)")
    label_ids: list[str] = Field(default=[], description="The labels that are AudioSet classes, as ontology ids")
    duration_s: float | None = None
    source: Source
    status: ClipStatus = Field(description="pending | ready | failed | duplicate (same audio as duplicate_of)")
    space: str | None = Field(default=None, description="The embedding space of its vectors (model:version:dim)")
    created_at: datetime
    duplicate_of: str | None = None
    job_id: str | None = Field(default=None, description="The job that processes the clip (expires)")
    error: ErrorBody | None = Field(default=None, description="Why processing failed (a coded error)")
    attempts: int = Field(default=0, description="How often its processing started")


class LibraryPage(BaseModel):
    items: list[LibraryClip]
    total: int
    page: int
    page_size: int


def to_item(clip: catalog.Clip) -> LibraryClip:
    source = catalog.source_of(clip)
    return LibraryClip(
        clip_id=clip.id,
        title=clip.title,
        labels=list(clip.labels or []),
        label_ids=label_ids(clip.labels or []),
        duration_s=clip.duration_s,
        source=source,
        status=clip.status,
        space=clip.space,
        created_at=clip.created_at,
        duplicate_of=clip.duplicate_of,
        job_id=clip.job_id,
        error=ErrorBody(code=clip.error_code, message=clip.error_message or "")
        if clip.status == ClipStatus.failed and clip.error_code
        else None,
        attempts=clip.attempts or 0,
    )


# -- reads -------------------------------------------------------------------------------------------------------
def list_clips(
    page: int = 1, page_size: int = 50, label: str | None = None, q: str | None = None, status: str | None = None
) -> LibraryPage:
    """Newest first. ``label`` matches a label exactly (an AudioSet id matches its name); ``q`` is a
    case-insensitive substring of the title or file name."""
    query = select(catalog.Clip)
    if label:
        # Labels are a JSON list of strings: match the JSON-encoded string, quotes included (an exact element).
        wanted = {label, label_name(label)}
        as_text = cast(catalog.Clip.labels, Text)
        query = query.where(or_(*(as_text.contains(json.dumps(w), autoescape=True) for w in wanted)))
    if q:
        pattern = q.lower()
        query = query.where(
            or_(
                func.lower(catalog.Clip.title).contains(pattern, autoescape=True),
                func.lower(func.coalesce(catalog.Clip.file_name, "")).contains(pattern, autoescape=True),
            )
        )
    if status:
        query = query.where(catalog.Clip.status == status)
    with catalog.session() as s:
        total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = s.scalars(
            query.order_by(catalog.Clip.created_at.desc(), catalog.Clip.id)
            .offset((page - 1) * page_size)
            .limit(page_size)
        ).all()
    return LibraryPage(items=[to_item(c) for c in rows], total=total, page=page, page_size=page_size)


def get_item(clip_id: str, store: JobStore | None = None) -> LibraryClip:
    item = to_item(catalog.get_clip(clip_id))
    if item.status in (ClipStatus.pending, ClipStatus.failed) and item.job_id:
        try:
            job = (store or JobStore()).get(item.job_id)
        except NotFound:
            return item
        if job.status == JobStatus.failed:  # the embedder fails a job without touching the catalog
            item.status, item.error = ClipStatus.failed, job.error
    return item


# -- writes ------------------------------------------------------------------------------------------------------
@dataclass
class Submitted:
    job: Job
    skipped: bool  # True: the same file was already in the library; nothing new was queued


def _done_job(store: JobStore, clip: catalog.Clip) -> Job:
    """A job that is already done, pointing at the clip that has these bytes."""
    clip_id = clip.duplicate_of or clip.id
    job = store.create(kind="ingest", clip_id=clip_id)
    store.update(job.id, status=JobStatus.done, progress="already in the library")
    return store.get(job.id)


def job_alive(store: JobStore, job_id: str | None) -> Job | None:
    """The clip's job while it is still running (not expired, not finished)."""
    job = _job_or_none(store, job_id)
    return None if job is None or job.status in (JobStatus.done, JobStatus.failed) else job


def submit_once(
    data: bytes,
    title: str,
    file_name: str | None = None,
    labels: list[str] | None = None,
    store: JobStore | None = None,
) -> Submitted:
    """Add a file to the library unless the same bytes are there already.

    Same bytes, clip ready (or a duplicate) -> a done job, nothing queued. Same bytes, clip pending with a live
    job -> that job. Same bytes, clip failed or pending with a vanished job (a crash, an expired job) -> the row
    is processed again under its own id. New bytes -> a new clip.
    """
    from echovids.pipeline import submit_clip

    store = store or JobStore()
    existing = catalog.find_by_file_hash(hashlib.sha256(data).hexdigest())
    if existing is not None:
        if existing.status in (ClipStatus.ready, ClipStatus.duplicate):
            return Submitted(_done_job(store, existing), skipped=True)
        live = job_alive(store, existing.job_id) if existing.status == ClipStatus.pending else None
        if live is not None:
            return Submitted(live, skipped=False)
        _forget_failure(existing.id)  # sent again by hand: a fresh count of attempts
        return Submitted(
            submit_clip(
                data,
                title=existing.title,
                file_name=existing.file_name,
                labels=labels or list(existing.labels or []),
                store=store,
                clip_id=existing.id,
            ),
            skipped=False,
        )
    return Submitted(submit_clip(data, title=title, file_name=file_name, labels=labels, store=store), skipped=False)


def _forget_failure(clip_id: str) -> None:
    with catalog.session() as s:
        row = s.get(catalog.Clip, clip_id)
        if row is not None:
            row.status, row.attempts, row.resubmissions = ClipStatus.pending, 0, 0
            row.error_code = row.error_message = None


def delete_clip(clip_id: str, store: JobStore | None = None) -> None:
    """Remove a clip from the catalog; its shard tombstones its frames (the search task, sent by name).

    Clips that were duplicates of it (same audio, never indexed themselves) are not left pointing at nothing:
    the earliest of them is indexed from its own stored audio and the others now point at it.
    """
    from echovids.celery_app import get_celery

    store = store or JobStore()
    clip = catalog.get_clip(clip_id)  # NotFound -> 404
    # Tombstone first: should sending fail, the clip is still listed and the delete can be retried.
    get_celery().send_task(
        TaskName.DELETE_CLIP, kwargs={"clip_id": clip_id, "shard": clip.shard}, queue=queues.shard_queue(clip.shard)
    )
    with catalog.session() as s:
        row = s.get(catalog.Clip, clip_id)
        if row is not None:
            s.delete(row)
    store.drop_blobs(clip_id)
    clip_audio.delete(clip_id)
    _promote_duplicate(clip_id, store)


def _promote_duplicate(original_id: str, store: JobStore) -> str | None:
    """Index the earliest duplicate of a deleted clip in its place; returns its id (None: there were none)."""

    with catalog.session() as s:
        duplicates = list(
            s.scalars(
                select(catalog.Clip)
                .where(catalog.Clip.duplicate_of == original_id)
                .order_by(catalog.Clip.created_at, catalog.Clip.id)
            )
        )
    heir, audio = next(((d, path) for d in duplicates if (path := clip_audio.find(d.id)) is not None), (None, None))
    with catalog.session() as s:
        for duplicate in duplicates:
            row = s.get(catalog.Clip, duplicate.id)
            if row is None:
                continue
            if heir is None:  # no stored audio to index any of them from
                row.status, row.duplicate_of = ClipStatus.failed, None
            else:
                row.duplicate_of = None if row.id == heir.id else heir.id
    if heir is None or audio is None:
        return None
    _process_again(heir, audio, store)
    return heir.id


def _process_again(clip: catalog.Clip, audio: Path, store: JobStore) -> None:
    """Run a catalog clip through embed -> index once more, under its own id, from its stored audio."""
    from echovids.pipeline import submit_clip

    submit_clip(
        audio.read_bytes(),
        title=clip.title,
        file_name=clip.file_name,
        labels=list(clip.labels or []),
        store=store,
        clip_id=clip.id,
    )


# -- upkeep ------------------------------------------------------------------------------------------------------
def recover_clip(clip_id: str, store: JobStore | None = None) -> ClipStatus | None:
    """A clip whose indexed frames were found damaged (its shard set the segment aside): embedded again from its
    stored audio (pending), or, with none left, failed with ``index_damaged``. Returns its new status (None:
    nothing to do: the clip is gone, failed already, or a duplicate that has no frames of its own)."""
    try:
        clip = catalog.get_clip(clip_id)
    except NotFound:
        return None
    if clip.status not in (ClipStatus.ready, ClipStatus.pending):
        return None
    path = clip_audio.find(clip_id)
    if path is None:
        error = IndexDamaged(f"The clip's indexed frames were damaged on disk and {_no_audio(clip)}")
        with catalog.session() as s:
            row = s.get(catalog.Clip, clip_id)
            if row is not None:
                row.status, row.error_code, row.error_message = ClipStatus.failed, error.code, error.message
        log.error("library clip %s: damaged index segment and no stored audio; marked failed", clip_id)
        return ClipStatus.failed
    _process_again(clip, path, store or JobStore())
    log.warning("library clip %s: damaged index segment; embedding it again from its stored audio", clip_id)
    return ClipStatus.pending


@dataclass
class Reconciled:
    resubmitted: list[str]
    failed: list[str]


def reconcile_pending(store: JobStore | None = None, older_than_s: float | None = None) -> Reconciled:
    """Settle library clips stuck in ``pending``: nothing is lost, nothing waits forever.

    A pending clip whose job is still queued or running is left alone. One whose job failed is marked failed
    (with the job's error). One whose job vanished (expired, Redis flushed) or was never sent (a crash between
    the row and the send) is processed again from its stored audio, once; a second time, after
    ``library_max_attempts`` starts, or without stored audio, it is marked failed. The counts are in the catalog,
    so a Redis that is lost or flushed does not make a poison clip new again; ``failed`` clips are never looked
    at. Only rows older than ``older_than_s`` are looked at, so a clip being submitted now is not taken for stuck.
    """
    settings = get_settings()
    store = store or JobStore()
    age = settings.library_stale_pending_s if older_than_s is None else older_than_s
    cutoff = datetime.now(UTC) - timedelta(seconds=age)
    with catalog.session() as s:
        stuck = list(
            s.scalars(
                select(catalog.Clip).where(catalog.Clip.status == ClipStatus.pending, catalog.Clip.created_at < cutoff)
            )
        )
    report = Reconciled(resubmitted=[], failed=[])
    jobs = {clip.id: _job_or_none(store, clip.job_id) for clip in stuck}
    at_work = _with_messages([job.id for job in jobs.values() if job is not None and not job.status.settled], store)
    for clip in stuck:
        job = jobs[clip.id]
        if job is not None and not job.status.settled:
            if job.id in at_work:
                continue  # still queued or at work
            log.warning(
                "library clip %s: its job %s says %s, but the broker holds no task of it", clip.id, job.id, job.status
            )
            job = None  # lost with its message: as if it had vanished
        failure = _why_not_again(clip, job)
        if failure is not None:
            catalog.mark_failed(clip.id, failure.code, failure.message)
            report.failed.append(clip.id)
            log.warning("library clip %s was stuck pending; marked failed (%s)", clip.id, failure.code)
            continue
        with catalog.session() as s:
            row = s.get(catalog.Clip, clip.id)
            if row is not None:
                row.resubmissions = (row.resubmissions or 0) + 1
        path = clip_audio.find(clip.id)
        assert path is not None  # checked by _why_not_again
        _process_again(clip, path, store)
        report.resubmitted.append(clip.id)
        log.warning("library clip %s was stuck pending (its job vanished); processing it again", clip.id)
    return report


def _with_messages(job_ids: list[str], store: JobStore) -> set[str]:
    """Those of ``job_ids`` whose task message the broker holds, looked at twice a second apart: a message is
    in no key for the instant between a worker's take and its note of it (echovids.broker)."""
    found = jobs_with_messages(job_ids, store.redis)
    if missing := set(job_ids) - found:
        time.sleep(1.0)
        found |= jobs_with_messages(missing, store.redis)
    return found


def _why_not_again(clip: catalog.Clip, job: Job | None) -> ErrorBody | None:
    """Why a stuck clip is not sent again (None: it is)."""
    if job is not None and job.status == JobStatus.failed:
        return job.error or ErrorBody(code="internal_error", message="Its job failed.")
    if clip_audio.find(clip.id) is None:
        return ErrorBody(code="not_found", message=f"Its job was lost and {_no_audio(clip)}")
    if (clip.resubmissions or 0) >= 1 or (clip.attempts or 0) >= get_settings().library_max_attempts:
        return ErrorBody(
            code=ProcessingFailed.code, message="Processing the clip was started again and still never finished."
        )
    return None


def _no_audio(clip: catalog.Clip) -> str:
    """Why a clip cannot be processed again here, and what its owner can do."""
    if clip.source_kind == "youtube":  # imported as features: no audio was ever stored
        return "an imported clip keeps no audio to index it from: run the import again (it skips what is in)."
    return "its stored audio is gone: add the file again."


def _job_or_none(store: JobStore, job_id: str | None) -> Job | None:
    if not job_id:
        return None
    try:
        return store.get(job_id)
    except NotFound:
        return None
