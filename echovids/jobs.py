"""Job records and the blobs a job hands between services, in Redis; every key written here carries a TTL.

A job record is a Redis hash, one JSON value per field of :class:`Job`, so a task's update writes only the
fields it changes (one round trip, in a script that also refuses to move a settled job backwards).
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import redis
import redis.asyncio as aioredis
from pydantic_core import to_json

from echovids.errors import EchovidsError, NotFound, SearchUnavailable
from echovids.redis_conn import get_redis, redis_url
from echovids.schemas import ErrorBody, Job, JobStatus, SearchResult
from echovids.settings import get_settings

PREFIX = "echovids:"
SETTLED = (JobStatus.done, JobStatus.failed)
# Statuses past the shard wait: the merge has run, so the search's deadline is no longer watched.
PAST_SEARCH = (JobStatus.checking, *SETTLED)
# Search jobs by the earliest time their merge deadline can be due (see services/search/deadlines.py).
DEADLINES = f"{PREFIX}search:deadlines"
# A stage's start is kept as a field of its own (milliseconds since the epoch) so that the first write wins.
STAGE = "stage:"
# Past its shard wait, the deadline merge (swept twice a second in the merge worker) has this long to run before
# a reader of the job ends it instead (the merge worker may be the one that hangs).
MERGE_GRACE_S = 0.75


def _job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def upload_key(item_id: str) -> str:
    return f"{PREFIX}upload:{item_id}"


def arrays_key(item_id: str) -> str:
    return f"{PREFIX}arrays:{item_id}"


def audio_key(item_id: str) -> str:
    return f"{PREFIX}audio:{item_id}"


def blob_keys(item_id: str) -> list[str]:
    return [upload_key(item_id), arrays_key(item_id), audio_key(item_id)]


def settled_channel(job_id: str) -> str:
    """Pub/sub channel told when the job is done or failed (what a long poll waits on)."""
    return f"{PREFIX}settled:{job_id}"


def _expired(job_id: str) -> NotFound:
    settings = get_settings()
    return NotFound(
        f"No job with id {job_id!r} (a search is kept {settings.search_result_ttl_s // 60} min after it ends, "
        f"other jobs {settings.job_ttl_s // 3600} h)."
    )


def _now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


def _encoded(fields: dict[str, Any]) -> dict[str, bytes]:
    return {name: to_json(value) for name, value in fields.items()}


# KEYS: the job, its settled channel, the deadlines set. ARGV: ttl, the new status (JSON) or "", whether it
# settles the job, whether it is past the shard wait, now in ms, a settled search's ttl, then field/value pairs.
# A settled job keeps its status (a retried or duplicated task must not move it backwards); settling it drops
# its blobs (a search's upload, arrays and audio; an ingest's, under its clip id), which nothing reads after.
_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local status = ARGV[2]
local current = redis.call('HGET', KEYS[1], 'status')
local settled = ARGV[3] == '1' or current == DONE or current == FAILED
if status ~= '' then
  if current == DONE or current == FAILED then return 0 end
  redis.call('HSETNX', KEYS[1], STAGE .. cjson.decode(status), ARGV[5])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
if settled and redis.call('HGET', KEYS[1], 'kind') == SEARCH then
  redis.call('EXPIRE', KEYS[1], ARGV[6])
else
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
local job_id = string.sub(KEYS[1], string.len(JOB) + 1)
if ARGV[4] == '1' then redis.call('ZREM', KEYS[3], job_id) end
if ARGV[3] == '1' then
  redis.call('PUBLISH', KEYS[2], cjson.decode(status))
  local items = {job_id}
  local clip = redis.call('HGET', KEYS[1], 'clip_id')
  if clip and clip ~= 'null' then table.insert(items, cjson.decode(clip)) end
  for _, item in ipairs(items) do
    redis.call('DEL', UPLOAD .. item, ARRAYS .. item, AUDIO .. item)
  end
end
return 1
"""
for _name, _value in {
    "DONE": json.dumps(JobStatus.done.value),
    "FAILED": json.dumps(JobStatus.failed.value),
    "SEARCH": json.dumps("search"),
    "STAGE": STAGE,
    "JOB": _job_key(""),
    "UPLOAD": upload_key(""),
    "ARRAYS": arrays_key(""),
    "AUDIO": audio_key(""),
}.items():
    _UPDATE = _UPDATE.replace(_name, json.dumps(_value))  # Lua string literals (JSON's quoting is Lua's too)


def settle_by(job: Job) -> float:
    """When (seconds since the epoch) a search job must be settled, whatever its workers do.

    Its whole life from submission is bounded (ECHOVIDS_SEARCH_TOTAL_TIMEOUT_S: an embedder that hangs holds it
    no longer), and once embedded its shards' wait (ECHOVIDS_SEARCH_TIMEOUT_S) and the merge's grace.
    """
    settings = get_settings()
    created = job.created_at.timestamp()
    total = created + settings.search_total_timeout_s
    searching_ms = job.stage_ms.get(JobStatus.searching.value)
    if job.status in PAST_SEARCH or searching_ms is None:
        return total
    return min(total, created + searching_ms / 1000 + settings.search_timeout_s + MERGE_GRACE_S)


def overdue_error(job: Job, now: float | None = None) -> EchovidsError | None:
    """The error that ends a search job past its :func:`settle_by`, or None while it has time (or is settled)."""
    if job.kind != "search" or job.status in SETTLED:
        return None
    now = time.time() if now is None else now
    if now < settle_by(job):
        return None
    settings = get_settings()
    if job.status == JobStatus.searching:
        return SearchUnavailable(f"No search shard answered within {settings.search_timeout_s:g} s; try again.")
    return SearchUnavailable(
        f"The search did not finish within {settings.search_total_timeout_s:g} s ({job.status.value}); try again."
    )


class JobStore:
    """Reads and writes job records; the gateway's 404 for an unknown id comes from here."""

    def __init__(self, client: redis.Redis | None = None) -> None:
        self.redis = client or get_redis()
        self.ttl = get_settings().job_ttl_s
        self._update = self.redis.register_script(_UPDATE)

    def _new(self, kind: str, k: int | None, clip_id: str | None, **fields: Any) -> tuple[Job, redis.client.Pipeline]:
        now = _now()
        job = Job(
            id=new_id(),
            kind=kind,
            status=JobStatus.queued,
            created_at=now,
            updated_at=now,
            k=k,
            clip_id=clip_id,
            **fields,
        )
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(_job_key(job.id), mapping=_encoded(job.model_dump(exclude={"stage_ms"})))  # type: ignore[arg-type]
        pipe.expire(_job_key(job.id), self.ttl)
        return job, pipe

    def create(self, kind: str = "search", k: int | None = None, clip_id: str | None = None) -> Job:
        job, pipe = self._new(kind, k, clip_id)
        pipe.execute()
        return job

    def create_search(self, k: int, upload: bytes | None, wait_s: float, **fields: Any) -> Job:
        """A search's job, its upload (none for a text) and its deadline (``wait_s`` from now at the earliest),
        in one round trip; ``fields``: more of the record (``text``, ``filters``)."""
        job, pipe = self._new("search", k, None, **fields)
        if upload is not None:
            pipe.set(upload_key(job.id), upload, ex=get_settings().upload_ttl_s)
        pipe.zadd(DEADLINES, {job.id: time.time() + wait_s})
        pipe.execute()
        return job

    def get(self, job_id: str) -> Job:
        return self._parse(job_id, self.redis.hgetall(_job_key(job_id)))

    def _parse(self, job_id: str, raw: Any) -> Job:
        if not raw:
            raise _expired(job_id)
        fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
        stages = {name.removeprefix(STAGE): float(fields.pop(name)) for name in list(fields) if name.startswith(STAGE)}
        job = Job.model_validate({name: json.loads(value) for name, value in fields.items()})
        created_ms = job.created_at.timestamp() * 1000
        job.stage_ms = {name: round(at - created_ms, 1) for name, at in stages.items()}
        return job

    async def wait_settled(self, job_id: str, wait_s: float, due: Callable[[Job], float] | None = None) -> Job:
        """The job once done or failed, or as it stands after ``wait_s`` seconds (a long poll).

        With ``due`` (the job -> when it must be settled, seconds since the epoch) the wait also ends then; the
        record is re-read at least every second, since ``due`` moves as the job advances.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        # A client of its own: a long poll holds a connection for its whole wait, on the caller's event loop.
        async with aioredis.Redis.from_url(redis_url()) as client, client.pubsub() as pubsub:
            await pubsub.subscribe(settled_channel(job_id))
            # Read after subscribing: a job settled in between is seen here, one settled later is announced.
            job = self._parse(job_id, await client.hgetall(_job_key(job_id)))
            while job.status not in SETTLED:
                left = deadline - loop.time()
                if due is not None:
                    left = min(left, due(job) - time.time(), 1.0)
                if left <= 0:
                    break
                await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
                job = self._parse(job_id, await client.hgetall(_job_key(job_id)))
        return job

    def end_if_overdue(self, job: Job) -> Job:
        """Fail a search past its deadline (its workers hung or gone) and answer the record as it now stands."""
        error = overdue_error(job)
        if error is None:
            return job
        self.fail(job.id, error)  # a merge that settles it first wins: a settled job keeps its status
        return self.get(job.id)

    def update(self, job_id: str, **fields: Any) -> None:
        """Write these fields of the job (and when a new status began); a settled job keeps its status."""
        status: JobStatus | None = fields.get("status")
        now = _now()
        pairs: list[Any] = []
        for name, value in _encoded({**fields, "updated_at": now}).items():
            pairs += [name, value]
        answer = self._update(
            keys=[_job_key(job_id), settled_channel(job_id), DEADLINES],
            args=[
                self.ttl,
                to_json(status) if status is not None else "",
                int(status in SETTLED),
                int(status in PAST_SEARCH),
                now.timestamp() * 1000,
                get_settings().search_result_ttl_s,
                *pairs,
            ],
        )
        if int(answer) < 0:
            raise _expired(job_id)

    def set_status(self, job_id: str, status: JobStatus, progress: str | None = None) -> None:
        self.update(job_id, status=status, progress=progress)

    def finish(self, job_id: str, results: list[SearchResult], **fields: Any) -> None:
        """Done, with results (and other fields); ``partial`` and ``missing_shards``, set by the merge, stay."""
        self.update(job_id, status=JobStatus.done, results=results, progress=None, **fields)

    def fail(self, job_id: str, error: EchovidsError) -> None:
        self.update(
            job_id, status=JobStatus.failed, progress=None, error=ErrorBody(code=error.code, message=error.message)
        )

    # Uploads and vectors: transient blobs handed between services, dropped when their job settles.
    def put_upload(self, item_id: str, data: bytes, ttl: int | None = None) -> None:
        self.redis.set(upload_key(item_id), data, ex=ttl or get_settings().upload_ttl_s)

    def get_upload(self, item_id: str) -> bytes:
        data = self.redis.get(upload_key(item_id))
        if not isinstance(data, bytes):
            raise NotFound(f"The upload for {item_id!r} has expired or was never stored.")
        return data

    def put_arrays(self, item_id: str, arrays: dict[str, np.ndarray], audio: np.ndarray | None = None) -> None:
        """Hand arrays (frame vectors, landmarks) to the next service as one compact binary blob.

        ``audio``: a query's decoded waveform, kept apart (only the merge reads it, and only to settle exact
        matches against each other), so the upload is decoded once.
        """
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds too narrowly
        ttl = get_settings().upload_ttl_s
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(arrays_key(item_id), buffer.getvalue(), ex=ttl)
        if audio is not None:
            pipe.set(audio_key(item_id), np.ascontiguousarray(audio, dtype=np.float32).tobytes(), ex=ttl)
        pipe.execute()

    def get_arrays(self, item_id: str) -> dict[str, np.ndarray]:
        raw = self.redis.get(arrays_key(item_id))
        if not isinstance(raw, bytes):
            raise NotFound(f"The embeddings for {item_id!r} have expired.")
        with np.load(io.BytesIO(raw)) as data:
            return {name: data[name] for name in data.files}

    def get_audio(self, item_id: str) -> np.ndarray | None:
        """The query's waveform stored with its arrays; None once gone."""
        raw = self.redis.get(audio_key(item_id))
        return np.frombuffer(raw, dtype=np.float32) if isinstance(raw, bytes) else None

    def drop_blobs(self, item_id: str) -> None:
        self.redis.delete(*blob_keys(item_id))

    # The search deadlines (a sorted set; services/search/deadlines.py sweeps it).
    def overdue(self, now: float, limit: int = 100) -> list[str]:
        """Search jobs whose deadline entry is due by ``now``."""
        due = self.redis.zrangebyscore(DEADLINES, "-inf", now, start=0, num=limit)
        return [d.decode() if isinstance(d, bytes) else str(d) for d in due]

    def add_deadline(self, job_id: str, at: float) -> None:
        self.redis.zadd(DEADLINES, {job_id: at})

    def set_deadline(self, job_id: str, at: float) -> None:
        """Move an entry still watched to ``at`` (an entry already claimed or removed stays gone)."""
        self.redis.zadd(DEADLINES, {job_id: at}, xx=True)

    def claim_deadline(self, job_id: str) -> bool:
        """Take the entry off the set: True for the one sweeper that did."""
        return bool(self.redis.zrem(DEADLINES, job_id))
