"""Job records and uploads in Redis; every key written here carries a TTL."""

from __future__ import annotations

import asyncio
import io
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis
import redis.asyncio as aioredis

from echovids.errors import EchovidsError, NotFound
from echovids.redis_conn import get_redis, redis_url
from echovids.schemas import ErrorBody, Job, JobStatus, SearchResult
from echovids.settings import get_settings

PREFIX = "echovids:"
SETTLED = (JobStatus.done, JobStatus.failed)


def _job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def upload_key(item_id: str) -> str:
    return f"{PREFIX}upload:{item_id}"


def arrays_key(item_id: str) -> str:
    return f"{PREFIX}arrays:{item_id}"


def settled_channel(job_id: str) -> str:
    """Pub/sub channel told when the job is done or failed (what a long poll waits on)."""
    return f"{PREFIX}settled:{job_id}"


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
        return self._parse(job_id, self.redis.get(_job_key(job_id)))

    def _parse(self, job_id: str, raw: Any) -> Job:
        if raw is None:
            raise NotFound(f"No job with id {job_id!r} (jobs expire after {self.ttl // 3600} h).")
        return Job.model_validate_json(raw)

    def _save(self, job: Job) -> None:
        job.updated_at = _now()
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(_job_key(job.id), job.model_dump_json(), ex=self.ttl)
        if job.status in SETTLED:
            pipe.publish(settled_channel(job.id), job.status.value)
        pipe.execute()

    async def wait_settled(self, job_id: str, wait_s: float) -> Job:
        """The job once done or failed, or as it stands after ``wait_s`` seconds (a long poll)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        # A client of its own: a long poll holds a connection for its whole wait, on the caller's event loop.
        async with aioredis.Redis.from_url(redis_url()) as client, client.pubsub() as pubsub:
            await pubsub.subscribe(settled_channel(job_id))
            # Read after subscribing: a job settled in between is seen here, one settled later is announced.
            job = self._parse(job_id, await client.get(_job_key(job_id)))
            while job.status not in SETTLED and (left := deadline - loop.time()) > 0:
                if await pubsub.get_message(ignore_subscribe_messages=True, timeout=left) is not None:
                    job = self._parse(job_id, await client.get(_job_key(job_id)))
        return job

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

    def finish(self, job_id: str, results: list[SearchResult], **fields: Any) -> Job:
        """Done, with results (and other fields); ``partial`` and ``missing_shards``, set by the merge, stay."""
        return self.update(job_id, status=JobStatus.done, results=results, progress=None, **fields)

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
