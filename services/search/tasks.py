"""Search tasks: one per shard per query (fan-out), a merge, and the index writes that own a clip's shard."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from celery import Task, shared_task
from celery.exceptions import Ignore
from celery.signals import worker_process_init

from echovids import catalog, landmarks, queues
from echovids.audio import decode_bytes
from echovids.celery_app import get_celery
from echovids.errors import EchovidsError
from echovids.framing import HOP_S
from echovids.jobs import JobStore
from echovids.library import label_ids, reconcile_pending
from echovids.queues import TaskName
from echovids.redis_conn import get_redis
from echovids.schemas import (
    ClipEmbedded,
    ClipStatus,
    ErrorBody,
    JobStatus,
    MatchKind,
    QueryEmbedded,
    SearchResult,
    ShardAnswer,
    ShardCandidate,
)
from echovids.settings import get_settings
from echovids.tasks import TASK_OPTIONS, fail_job
from services.availability.resolve import resolve_cached
from services.search.matching import aligned_score, best_matches, neighbours_for, vote
from services.search.shard import ShardIndex
from services.search.verify import aligned_audio, demote_chance_exact, settle_exact
from services.search.worker import PRELOAD_SHARDS  # the worker entry owns which shards it serves

_indexes: dict[int, ShardIndex] = {}
_generations: dict[int, int] = {}
_lock = threading.Lock()


@worker_process_init.connect
def _preload(**_: Any) -> None:
    """Load the served shards when a pool process starts, so no query waits for a cold index."""
    for shard in PRELOAD_SHARDS:
        get_index(shard)


def _generation_key(shard: int) -> str:
    return f"echovids:shard:{shard}:generation"


def get_index(shard: int) -> ShardIndex:
    """This process's copy of a shard, refreshed when another replica has written to it."""
    with _lock:
        index = _indexes.get(shard)
        if index is None:
            index = _indexes[shard] = ShardIndex(get_settings().data_dir, shard)
            maybe_compact(index)
        generation = int(get_redis().get(_generation_key(shard)) or 0)
        if _generations.get(shard) != generation:
            index.refresh()
            _generations[shard] = generation
        return index


def _bump(shard: int, written: str | None = None) -> None:
    """Tell the shard's replicas something changed; the writer itself takes in its own segment directly.

    Re-reading the segment folder on every write would make bulk indexing quadratic.
    """
    generation = int(get_redis().incr(_generation_key(shard)))
    with _lock:
        if written is not None and _generations.get(shard) == generation - 1:
            _indexes[shard].add_segment(written)
            _generations[shard] = generation


def maybe_compact(index: ShardIndex) -> None:
    """Queue one compaction of the shard once its exactly-searched delta has outgrown the setting."""
    settings = get_settings()
    if index.delta_rows <= settings.search_delta_max:
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


_side = ThreadPoolExecutor(1, thread_name_prefix="landmarks")
WIDER_LOOK = 4  # neighbours per query frame on the second look, as a multiple of the first's


def search_shard(
    index: ShardIndex, query_space: str, arrays: dict[str, np.ndarray], limit: int, k: int = 0
) -> list[ShardCandidate]:
    """This shard's best clips: exact landmark matches, then embedding matches voted on time offsets.

    ``limit`` candidates are re-scored; when the neighbours reach fewer than ``k`` clips and the shard holds
    more, the search looks once more, further out.
    """
    index.check_space(query_space)
    view = index.view()  # one layout for the whole query, whatever a compaction swaps in meanwhile
    if view.rows == 0:
        return []
    settings = get_settings()
    hashes = arrays["hashes"]
    # The landmark match shares nothing with the embedding search until the end: it runs beside it (both
    # spend their time in numpy and ScaNN, which release the GIL).
    landmark_matches = _side.submit(view.match_landmarks, hashes, arrays["times"], limit, arrays.get("weights"))
    vectors = arrays["vectors"].astype(np.float32)
    # Silent frames are zero vectors that cast no vote: the audible ones alone must reach ``limit`` clips
    # (ESC-10 similar-moment timestamped P@10 0.949 -> 0.951 through the system, docs/quality.md).
    audible = int(np.count_nonzero(vectors.any(axis=1)))
    neighbours = neighbours_for(settings.search_neighbours, limit, audible)
    rows, sims = view.search(vectors, neighbours)
    clips, offsets, votes = vote(rows, sims, view.row_clip, view.row_frame)
    reached = np.unique(clips).size
    if reached < k and view.live_clips() > reached:
        # The neighbours crowded into a few clips (a clock's ticks all sound alike: 2 of the 80 ESC-10
        # similar-moment queries got 9 results of 10 from 26 recordings).
        rows, sims = view.search(vectors, neighbours * WIDER_LOOK)
        clips, offsets, votes = vote(rows, sims, view.row_clip, view.row_frame)
    matches = best_matches(clips, offsets, votes, vectors, view.clip_frames, limit=limit, centre=view.centre)
    candidates = {
        view.clip_ids[mt.clip]: ShardCandidate(
            clip_id=view.clip_ids[mt.clip],
            match=MatchKind.similar,
            score=mt.score,
            votes=mt.votes,
            match_start_s=(mt.query_start + mt.offset) * HOP_S,
            query_start_s=mt.query_start * HOP_S,
            labels=view.clip_labels(mt.clip, mt.query_start + mt.offset, len(vectors) - mt.query_start),
        )
        for mt in matches
    }
    needed = max(settings.landmark_min_votes, settings.landmark_min_fraction * hashes.size)
    for lm in landmark_matches.result():
        # A periodic sound lines up with itself at many offsets; a true copy has one offset far above the rest.
        if lm.votes < needed or lm.votes < settings.landmark_min_peak_ratio * lm.runner_up:
            continue
        offset = round(lm.offset * landmarks.HOP_S / HOP_S)
        score = aligned_score(vectors, view.clip_frames(lm.clip), offset, view.centre).score
        clip_id = view.clip_ids[lm.clip]
        match_start_s = (lm.query_start + lm.offset) * landmarks.HOP_S
        query_start_s = lm.query_start * landmarks.HOP_S
        candidates[clip_id] = ShardCandidate(
            clip_id=clip_id,
            match=MatchKind.exact,
            score=score,
            votes=lm.weight,
            match_start_s=match_start_s,
            query_start_s=query_start_s,
            labels=view.clip_labels(lm.clip, round(match_start_s / HOP_S), len(vectors) - round(query_start_s / HOP_S)),
        )
    return sorted(candidates.values(), key=rank_key)


def rank_key(candidate: ShardCandidate) -> tuple[bool, float]:
    """Exact matches (this very recording) first, by loudness-weighted alignment; then the most similar."""
    exact = candidate.match == MatchKind.exact
    return (not exact, -candidate.votes if exact else -candidate.score)


def rank_answers(
    candidates: list[ShardCandidate],
    k: int,
    query_audio: Callable[[], np.ndarray | None],
    audio_of: Callable[[ShardCandidate, float], np.ndarray | None] = aligned_audio,
) -> list[ShardCandidate]:
    """The shards' candidates as one ranked list of ``forwarded(k)``.

    Several recordings hold the query (one playing over another): the one it mostly is goes first; exact matches
    far weaker than it are chance alignments and rank as similar ones.
    """
    ranked = sorted(candidates, key=rank_key)[: forwarded(k)]
    return demote_chance_exact(settle_exact(ranked, query_audio, audio_of))


def forwarded(k: int) -> int:
    """Candidates a query carries past the search: more than k, so dead videos can be back-filled."""
    return max(k * 3, k + 10)


@shared_task(name=TaskName.SEARCH_SHARD, **TASK_OPTIONS)
def query_shard(self: Task, embedded: dict[str, Any], *, job_id: str, shard: int) -> dict[str, Any]:
    query = QueryEmbedded.model_validate(embedded)
    arrays = JobStore().get_arrays(job_id)
    try:
        # 100 candidates are re-scored (recall of similar sounds); only the best few travel on to the merge.
        found = search_shard(get_index(shard), query.space.key, arrays, limit=max(query.k * 2, 100), k=query.k)
        answer = ShardAnswer(shard=shard, candidates=found[: forwarded(query.k)])
    except EchovidsError as error:
        answer = ShardAnswer(shard=shard, candidates=[], error=ErrorBody(code=error.code, message=error.message))
    key = _answers_key(job_id)
    pipe = get_redis().pipeline()
    pipe.hset(key, str(shard), answer.model_dump_json())
    pipe.expire(key, get_settings().job_ttl_s)
    pipe.hlen(key)
    answered = pipe.execute()[-1]
    if answered >= get_settings().search_shards:
        # The last shard to answer merges at once, here: one Celery hop less on every query. The deadline
        # merge (sent with the fan-out) covers a shard that never answers; the first merge to run wins.
        merge_answers(job_id, query.k)
    return {"shard": shard, "candidates": len(answer.candidates)}


def _answers_key(job_id: str) -> str:
    return f"echovids:answers:{job_id}"


def to_result(candidate: ShardCandidate, clip: catalog.Clip) -> SearchResult:
    match_start = max(0.0, candidate.match_start_s)
    source = catalog.source_of(clip, at_s=match_start)
    labels = candidate.labels or list(clip.labels or [])
    return SearchResult(
        clip_id=clip.id,
        title=clip.title,
        source=source,
        match_start_s=round(match_start, 3),
        query_start_s=round(candidate.query_start_s, 3),
        score=round(candidate.score, 4),
        match=candidate.match,
        labels=labels,
        label_ids=label_ids(labels),
        available=True if clip.source_kind == "file" else None,
    )


@shared_task(name=TaskName.SEARCH_MERGE, **TASK_OPTIONS)
def merge(self: Task, *_previous: Any, job_id: str, k: int) -> None:
    """The deadline merge: sent with the fan-out to run when the search timeout is up (see merge_answers)."""
    merge_answers(job_id, k)


def merge_answers(job_id: str, k: int) -> None:
    """Merge the shards' answers into ranked results and hand them to the availability check.

    Runs twice per query: in the last shard to answer, and at the search deadline (so a shard that is down
    cannot hold a query forever). The first to run wins; without every shard, the job is partial.
    """
    settings = get_settings()
    client = get_redis()
    claim = f"echovids:merged:{job_id}"
    if not client.set(claim, 1, nx=True, ex=settings.job_ttl_s):
        return
    try:
        _merge(job_id, k)
    except Ignore:
        raise  # the job was failed on purpose (a shard's error): settled
    except Exception:
        client.delete(claim)  # a retry (or the deadline merge) must be able to try again
        raise


def _merge(job_id: str, k: int) -> None:
    settings = get_settings()
    raw = get_redis().hgetall(_answers_key(job_id))
    parsed = [ShardAnswer.model_validate_json(v) for v in raw.values()]
    missing = sorted(set(range(settings.search_shards)) - {a.shard for a in parsed})
    for answer in parsed:
        if answer.error is not None:
            fail_job(job_id, _error_from(answer.error))
    candidates = rank_answers([c for a in parsed for c in a.candidates], k, lambda: _query_audio(job_id))
    clips = catalog.get_clips([c.clip_id for c in candidates])
    # Clips deleted from the catalog since indexing are dropped here as well as by tombstones.
    results = [to_result(c, clips[c.clip_id]) for c in candidates if c.clip_id in clips]
    store = JobStore()
    # Every video the answer needs already cached (the common case): done here, one task hop less.
    cached = resolve_cached(results, k)
    if cached is not None:
        store.finish(job_id, cached.results, partial=bool(missing), missing_shards=missing)
        return
    store.update(job_id, status=JobStatus.checking, partial=bool(missing), missing_shards=missing)
    # More than k go on: the availability check drops dead videos and back-fills from the rest.
    get_celery().send_task(
        TaskName.CHECK_AVAILABILITY,
        args=([r.model_dump(mode="json") for r in results],),
        kwargs={"job_id": job_id, "k": k},
        queue=queues.AVAILABILITY,
    )


def _query_audio(job_id: str) -> np.ndarray | None:
    """The query's audio, decoded again from its upload (kept until it expires); None once gone."""
    try:
        return decode_bytes(JobStore().get_upload(job_id))
    except EchovidsError:
        return None


def _error_from(body: ErrorBody) -> EchovidsError:
    from echovids.errors import ERRORS_BY_CODE

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
        index.write_segment(clip_id, store.get_arrays(clip_id), info.space.key)
    except EchovidsError as error:
        catalog.set_status(clip_id, ClipStatus.failed)
        fail_job(job_id, error)
    _bump(shard, written=clip_id)
    maybe_compact(index)
    catalog.mark_ready(clip_id, info)
    store.drop_blobs(clip_id)
    store.update(job_id, status=JobStatus.done, progress=None)
    return {"clip_id": clip_id, "frames": info.n_frames}


@shared_task(name=TaskName.DELETE_CLIP, **TASK_OPTIONS)
def delete_clip(self: Task, *, clip_id: str, shard: int) -> None:
    """Tombstone a clip's frames; they stop matching at once and are purged at the next rebuild."""
    get_index(shard).write_tombstone(clip_id)
    _bump(shard)


@shared_task(name=TaskName.RECONCILE_LIBRARY, **TASK_OPTIONS)
def reconcile_library(self: Task) -> dict[str, list[str]]:
    """Periodic (echovids beat): settle library clips stuck in pending; see library.reconcile_pending."""
    settled = reconcile_pending()
    return {"resubmitted": settled.resubmitted, "failed": settled.failed}
