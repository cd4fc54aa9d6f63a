"""Search tasks: one per shard per query (fan-out), a merge, and the index writes that own a clip's shard.

Adapters: each validates its payload, calls the pure query code (services/search/query.py) or the shard, and
writes what came of it.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Ignore

import services.search.deadlines  # noqa: F401  # the deadline sweep starts with a worker that runs the merge
from echovids import availability, catalog, queues
from echovids.celery_app import get_celery
from echovids.errors import ERRORS_BY_CODE, EchovidsError, NotFound, SearchUnavailable
from echovids.jobs import JobStore
from echovids.library import reconcile_pending, recover_clip
from echovids.queues import TaskName
from echovids.redis_conn import get_redis
from echovids.schemas import (
    ClipEmbedded,
    ErrorBody,
    JobStatus,
    QueryEmbedded,
    ShardAnswer,
)
from echovids.settings import get_settings
from echovids.tasks import TASK_OPTIONS, fail_job
from services.search.query import (
    forwarded,
    missing_shards,
    rank_answers,
    search_shard,
    search_text_shard,
    sent_to_merge,
    to_result,
)
from services.search.shard import ShardIndex

_indexes: dict[int, ShardIndex] = {}
_generations: dict[int, int] = {}
_lock = threading.Lock()


def forget_indexes() -> None:
    """Let go of this process's shards (the search worker's main process, once its pool has them)."""
    with _lock:
        _indexes.clear()
        _generations.clear()


def _generation_key(shard: int) -> str:
    return f"echovids:shard:{shard}:generation"


def _written_key(shard: int) -> str:
    """generation -> the step that made it (a hash of the last WRITTEN_WINDOW generations)."""
    return f"echovids:shard:{shard}:written"


# A replica this many generations behind or less takes in the steps written since, clip by clip; further behind
# (or after a compaction, which names no clip) it reads the shard's folders again. A step is a clip's id (its new
# segment), or TOMBSTONE or CLASSES and the id (its delete, its class scores written by a re-index): clip ids never
# hold a colon. Re-reading the folders for each of these made a bulk load, delete or re-index quadratic.
WRITTEN_WINDOW = 10_000
TOMBSTONE, CLASSES = "tombstone:", "classes:"
# One step, so no replica sees the new generation without the clip that made it.
_BUMP = """
local generation = redis.call('INCR', KEYS[1])
if ARGV[1] ~= '' then redis.call('HSET', KEYS[2], generation, ARGV[1]) end
redis.call('HDEL', KEYS[2], generation - tonumber(ARGV[2]))
return generation
"""


def open_index(shard: int) -> ShardIndex:
    """This process's copy of a shard, read from its folders the first time. It asks Redis nothing: a search
    worker's start reads its shards while an embedded Redis may still be reading its own data back."""
    with _lock:
        index = _indexes.get(shard)
        if index is None:
            index = _indexes[shard] = ShardIndex(get_settings().data_dir, shard)
        return index


def get_index(shard: int) -> ShardIndex:
    """This process's copy of a shard, brought up to date when another replica has written to it."""
    index = open_index(shard)
    with _lock:
        generation = int(get_redis().get(_generation_key(shard)) or 0)
        mine = _generations.get(shard)
        if mine is None:  # its first look since it was opened
            maybe_compact(index)
        if mine != generation:
            written = _written_since(shard, mine, generation)
            if written is None:
                index.refresh()
            else:
                for step in written:
                    _take_in(index, step)
            _generations[shard] = generation
    _recover_damaged(index)
    return index


def _take_in(index: ShardIndex, step: str) -> None:
    """One step of the written hash, taken in without reading the shard's folders."""
    if step.startswith(TOMBSTONE):
        index.take_tombstone(step[len(TOMBSTONE) :])
    elif step.startswith(CLASSES):
        index.take_class_scores(step[len(CLASSES) :])
    else:
        index.add_segment(step)


def _written_since(shard: int, mine: int | None, generation: int) -> list[str] | None:
    """The steps after generation ``mine`` up to ``generation``, when every one named its clip; None when the
    shard's folders must be read again."""
    if mine is None or not 0 < generation - mine <= WRITTEN_WINDOW:
        return None
    fields = [str(g) for g in range(mine + 1, generation + 1)]
    found = get_redis().hmget(_written_key(shard), fields)
    if any(clip_id is None for clip_id in found):
        return None
    return [clip_id.decode() if isinstance(clip_id, bytes) else str(clip_id) for clip_id in found]


def _recover_damaged(index: ShardIndex) -> None:
    """Clips whose segments this process found damaged: re-embedded from stored audio, or failed (once each)."""
    for clip_id in index.take_quarantined():
        # Every replica of the shard may find the same damaged file; one recovery is enough.
        if get_redis().set(f"echovids:recovering:{clip_id}", 1, nx=True, ex=get_settings().job_ttl_s):
            recover_clip(clip_id)
    if index.rebuild_wanted:
        maybe_compact(index)


def _bump(shard: int, written: str | None = None) -> None:
    """Tell the shard's replicas something changed (``written``: the step, see WRITTEN_WINDOW); the writer
    itself takes in its own step directly."""
    keys = [_generation_key(shard), _written_key(shard)]
    generation = int(get_redis().eval(_BUMP, 2, *keys, written or "", WRITTEN_WINDOW))
    with _lock:
        if written is not None and _generations.get(shard) == generation - 1:
            _take_in(_indexes[shard], written)
            _generations[shard] = generation


def maybe_compact(index: ShardIndex) -> None:
    """Queue one compaction of the shard once its exactly-searched delta has outgrown the setting."""
    settings = get_settings()
    if index.delta_rows <= settings.search_delta_max and not index.rebuild_wanted:
        return
    lock = f"echovids:shard:{index.shard}:compacting"
    if get_redis().set(lock, 1, nx=True, ex=settings.task_time_limit_s * 4):
        get_celery().send_task(
            TaskName.COMPACT_SHARD, kwargs={"shard": index.shard}, queue=queues.shard_queue(index.shard)
        )


@shared_task(name=TaskName.COMPACT_SHARD, **TASK_OPTIONS)
def compact_shard(self: Task, *, shard: int) -> int:
    """Rebuild the shard's ScaNN snapshot from all its segments; other replicas swap on their next query."""
    try:
        version = get_index(shard).compact()
    finally:
        get_redis().delete(f"echovids:shard:{shard}:compacting")
    _bump(shard)
    return version


@shared_task(name=TaskName.SEARCH_SHARD, **TASK_OPTIONS)
def query_shard(self: Task, embedded: dict[str, Any], *, job_id: str, shard: int) -> None:
    """This shard's answer to a query; the last shard to answer merges them all."""
    query = QueryEmbedded.model_validate(embedded)
    store = JobStore()
    try:
        arrays = store.get_arrays(job_id)
    except NotFound:
        return  # the query settled without this shard (its deadline passed), and its arrays went with it
    try:
        filters = query.filters
        allowed_ids = (
            catalog.clip_ids_where(shard, filters.source, filters.min_duration_s, filters.max_duration_s)
            if filters is not None and filters.by_clip
            else None
        )
        if query.text:
            found = search_text_shard(get_index(shard), arrays, forwarded(query.k), filters, allowed_ids)
        else:
            assert query.space is not None
            # 100 candidates are re-scored (recall of similar sounds); only the best few travel on to the merge.
            found = search_shard(
                get_index(shard),
                query.space.key,
                arrays,
                limit=max(query.k * 2, 100),
                k=query.k,
                filters=filters,
                allowed_ids=allowed_ids,
            )
        answer = ShardAnswer(shard=shard, candidates=sent_to_merge(found, query.k))
    except EchovidsError as error:
        answer = ShardAnswer(shard=shard, candidates=[], error=ErrorBody(code=error.code, message=error.message))
    key = _answers_key(job_id)
    pipe = get_redis().pipeline(transaction=False)
    pipe.hset(key, str(shard), answer.model_dump_json())
    pipe.expire(key, _search_keys_ttl_s())
    pipe.hgetall(key)
    answers = _parsed(pipe.execute()[-1])
    if len(answers) >= get_settings().search_shards:
        # The last shard to answer merges at once, here, with the answers it just read: one Celery hop less on
        # every query. The deadline (services/search/deadlines.py) covers a shard that never answers.
        merge_answers(job_id, query.k, answers)


def _answers_key(job_id: str) -> str:
    return f"echovids:answers:{job_id}"


def _search_keys_ttl_s() -> int:
    """A search's own keys (its shards' answers, its merge claim) outlive the longest a search may take, no more:
    at saturation a search a second kept 6 h would hold gigabytes of Redis."""
    return int(2 * get_settings().search_total_timeout_s) + 60


def _parsed(raw: dict[Any, Any]) -> list[ShardAnswer]:
    return [ShardAnswer.model_validate_json(v) for v in raw.values()]


@shared_task(name=TaskName.SEARCH_MERGE, **TASK_OPTIONS)
def merge(self: Task, *_previous: Any, job_id: str, k: int) -> None:
    """The deadline merge: sent by a deadline sweep for a query whose shards did not all answer in time."""
    merge_answers(job_id, k)


def merge_answers(job_id: str, k: int, answers: list[ShardAnswer] | None = None) -> None:
    """Merge the shards' answers into ranked results and hand them to the availability check.

    Runs in the last shard to answer (with the ``answers`` it read), or at the search deadline (so a shard
    that is down cannot hold a query forever). The first to run wins; without every shard, the job is partial.
    """
    client = get_redis()
    claim = f"echovids:merged:{job_id}"
    pipe = client.pipeline(transaction=False)
    pipe.set(claim, 1, nx=True, ex=_search_keys_ttl_s())
    if answers is None:
        pipe.hgetall(_answers_key(job_id))
    replies = pipe.execute()
    if not replies[0]:
        return
    try:
        _merge(job_id, k, answers if answers is not None else _parsed(replies[1]))
    except Ignore:
        client.delete(_answers_key(job_id))
        raise  # the job was failed on purpose (a shard's error): settled
    except Exception:
        client.delete(claim)  # a retry (or the deadline merge) must be able to try again
        raise
    client.delete(_answers_key(job_id))  # settled: nothing reads them again


def _merge(job_id: str, k: int, answers: list[ShardAnswer]) -> None:
    missing = missing_shards(answers, get_settings().search_shards)
    if not answers:  # the deadline merge of a query no shard answered: an error to retry, not "0 results"
        fail_job(job_id, SearchUnavailable(f"No search shard answered within {get_settings().search_timeout_s:g} s."))
    for answer in answers:
        if answer.error is not None:
            fail_job(job_id, _error_from(answer.error))
    store = JobStore()
    candidates = rank_answers([c for a in answers for c in a.candidates], k, lambda: store.get_audio(job_id))
    clips = catalog.get_clips([c.clip_id for c in candidates])
    # Clips deleted from the catalog since indexing are dropped here as well as by tombstones.
    results = [to_result(c, clips[c.clip_id]) for c in candidates if c.clip_id in clips]
    cached = availability.read_sync(availability.video_ids(results))
    # Every video the answer needs already cached (the common case): done here, one task hop less.
    resolved = availability.resolve_cached(results, k, cached)
    if resolved is not None:
        store.finish(job_id, resolved.results, partial=bool(missing), missing_shards=missing)
        return
    store.update(job_id, status=JobStatus.checking, partial=bool(missing), missing_shards=missing)
    # More than k go on: the availability check drops dead videos and back-fills from the rest; the statuses
    # read here go with them, so the check does not read the cache again.
    get_celery().send_task(
        TaskName.CHECK_AVAILABILITY,
        args=([r.model_dump(mode="json") for r in results],),
        kwargs={"job_id": job_id, "k": k, "cached": {vid: status.value for vid, status in cached.items()}},
        queue=queues.AVAILABILITY,
    )


def _error_from(body: ErrorBody) -> EchovidsError:
    return ERRORS_BY_CODE.get(body.code, EchovidsError)(body.message)


@shared_task(name=TaskName.INDEX_CLIP, **TASK_OPTIONS)
def index_clip(self: Task, embedded: dict[str, Any], *, clip_id: str, job_id: str, shard: int) -> dict[str, Any]:
    """Write a clip's frames to its shard and mark it ready in the catalog; safe to run twice."""
    info = ClipEmbedded.model_validate(embedded)
    store = JobStore()
    store.set_status(job_id, JobStatus.searching, progress="indexing")
    try:
        # Same decoded audio as a clip already in the library (another file name, another upload): keep one.
        original = catalog.claim_content(clip_id, info)
    except EchovidsError as error:
        fail_job(job_id, error)
    if original is not None:
        store.drop_blobs(clip_id)
        store.update(job_id, status=JobStatus.done, progress=f"duplicate of {original}")
        return {"clip_id": clip_id, "frames": 0, "duplicate_of": original}
    try:
        index = get_index(shard)
        index.write_segment(clip_id, store.get_arrays(clip_id), info.space.key, info.space.hop_s)
    except EchovidsError as error:
        fail_job(job_id, error)  # and the catalog's clip, unless it is ready already
    _bump(shard, written=clip_id)
    maybe_compact(index)
    catalog.mark_ready(clip_id, info)
    store.drop_blobs(clip_id)
    store.update(job_id, status=JobStatus.done, progress=None)
    return {"clip_id": clip_id, "frames": info.n_frames}


@shared_task(name=TaskName.CHECK_CLIP_CLASSES, **TASK_OPTIONS)
def check_clip_classes(self: Task, *, clip: str, job_id: str, shard: int) -> None:
    """A re-index's first step: a clip that has its class scores (or is not in the shard) ends the chain here."""
    index = get_index(shard)
    if clip in index.deleted or not (index.segments / f"{clip}.npz").exists():
        fail_job(job_id, NotFound(f"Clip {clip!r} is not in shard {shard}."))
    if index.has_class_scores(clip):
        JobStore().update(job_id, status=JobStatus.done, progress="had them")
        raise Ignore()


@shared_task(name=TaskName.INDEX_CLIP_CLASSES, **TASK_OPTIONS)
def index_clip_classes(self: Task, embedded: dict[str, Any], *, clip: str, job_id: str, shard: int) -> bool:
    """A re-index: write the class scores beside a clip's segment (nothing when it has them); safe to run twice."""
    store = JobStore()
    try:
        written = get_index(shard).write_class_scores(clip, store.get_arrays(job_id))
    except EchovidsError as error:
        fail_job(job_id, error)
    if written:
        _bump(shard, written=CLASSES + clip)
    store.update(job_id, status=JobStatus.done, progress="class scores written" if written else "had them")
    return written


@shared_task(name=TaskName.DELETE_CLIP, **TASK_OPTIONS)
def delete_clip(self: Task, *, clip_id: str, shard: int) -> None:
    """Tombstone a clip's frames; they stop matching at once and are purged at the next rebuild."""
    get_index(shard).write_tombstone(clip_id)
    _bump(shard, written=TOMBSTONE + clip_id)


@shared_task(name=TaskName.RECONCILE_LIBRARY, **TASK_OPTIONS)
def reconcile_library(self: Task) -> dict[str, list[str]]:
    """Periodic (echovids beat): settle library clips stuck in pending; see library.reconcile_pending."""
    settled = reconcile_pending()
    return {"resubmitted": settled.resubmitted, "failed": settled.failed}
