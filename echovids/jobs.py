"""Job records and uploads in Redis; every key written here carries a TTL."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis

from echovids.errors import EchovidsError, NotFound
from echovids.redis_conn import get_redis
from echovids.schemas import ErrorBody, Job, JobStatus, SearchResult
from echovids.settings import get_settings

PREFIX = "echovids:"


def _job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def upload_key(item_id: str) -> str:
    return f"{PREFIX}upload:{item_id}"


def arrays_key(item_id: str) -> str:
    return f"{PREFIX}arrays:{item_id}"


def _now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class JobStore:
    """Reads and writes job records; the gateway's 404 for an unknown id comes from here."""

    def __init__(self, client: redis.Redis | None = None) -> None:
        self.redis = client or get_redis()
        self.ttl = get_settings().job_ttl_s

    def create(self, kind: str = "search", k: int | None = None, clip_id: str | None = None) -> Job:
        now = _now()
        job = Job(id=new_id(), kind=kind, status=JobStatus.queued, created_at=now, updated_at=now, k=k, clip_id=clip_id)
        self._save(job)
        return job

    def get(self, job_id: str) -> Job:
        raw = self.redis.get(_job_key(job_id))
        if raw is None:
            raise NotFound(f"No job with id {job_id!r} (jobs expire after {self.ttl // 3600} h).")
        return Job.model_validate_json(raw)

    def _save(self, job: Job) -> None:
        job.updated_at = _now()
        self.redis.set(_job_key(job.id), job.model_dump_json(), ex=self.ttl)

    def update(self, job_id: str, **fields: Any) -> Job:
        job = self.get(job_id)
        if job.status in (JobStatus.done, JobStatus.failed) and "status" in fields:
            # A retried or duplicated task must not move a finished job backwards.
            return job
        for name, value in fields.items():
            setattr(job, name, value)
        status = fields.get("status")
        if status is not None and status.value not in job.stage_ms:
            job.stage_ms[status.value] = round((_now() - job.created_at).total_seconds() * 1000, 1)
        self._save(job)
        return job

    def set_status(self, job_id: str, status: JobStatus, progress: str | None = None) -> Job:
        return self.update(job_id, status=status, progress=progress)

    def finish(self, job_id: str, results: list[SearchResult]) -> Job:
        """Done, with results; ``partial`` and ``missing_shards``, set by the merge, stay as they are."""
        return self.update(job_id, status=JobStatus.done, results=results, progress=None)

    def fail(self, job_id: str, error: EchovidsError) -> Job:
        return self.update(
            job_id, status=JobStatus.failed, progress=None, error=ErrorBody(code=error.code, message=error.message)
        )

    # Uploads and vectors: transient blobs handed between services.
    def put_upload(self, item_id: str, data: bytes, ttl: int | None = None) -> None:
        self.redis.set(upload_key(item_id), data, ex=ttl or get_settings().upload_ttl_s)

    def get_upload(self, item_id: str) -> bytes:
        data = self.redis.get(upload_key(item_id))
        if not isinstance(data, bytes):
            raise NotFound(f"The upload for {item_id!r} has expired or was never stored.")
        return data

    def put_arrays(self, item_id: str, arrays: dict[str, np.ndarray]) -> None:
        """Hand arrays (frame vectors, landmarks) to the next service as one compact binary blob."""
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds too narrowly
        self.redis.set(arrays_key(item_id), buffer.getvalue(), ex=get_settings().upload_ttl_s)

    def get_arrays(self, item_id: str) -> dict[str, np.ndarray]:
        raw = self.redis.get(arrays_key(item_id))
        if not isinstance(raw, bytes):
            raise NotFound(f"The embeddings for {item_id!r} have expired.")
        with np.load(io.BytesIO(raw)) as data:
            return {name: data[name] for name in data.files}

    def drop_blobs(self, item_id: str) -> None:
        self.redis.delete(upload_key(item_id), arrays_key(item_id))
