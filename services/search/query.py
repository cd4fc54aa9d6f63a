"""A query against the index, as pure functions: one shard's candidates, their ranking, the results they make.

The Celery tasks (services/search/tasks.py) and the offline evaluation both call these, so the two give the
same answers; nothing here touches Redis or Celery.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from echovids import catalog, landmarks
from echovids.audio_params import FRAME_HOP_S
from echovids.labels import label_ids
from echovids.schemas import MatchKind, SearchResult, ShardAnswer, ShardCandidate
from echovids.settings import get_settings
from services.search.matching import RESCORING, Rescoring, aligned_score, best_matches, neighbours_for, vote
from services.search.shard import ShardIndex
from services.search.verify import aligned_audio, demote_chance_exact, settle_exact

_side = ThreadPoolExecutor(1, thread_name_prefix="landmarks")


def search_shard(
    index: ShardIndex,
    query_space: str,
    arrays: dict[str, np.ndarray],
    limit: int,
    k: int = 0,
    rescoring: Rescoring = RESCORING,
) -> list[ShardCandidate]:
    """This shard's best clips: exact landmark matches, then embedding matches voted on time offsets.

    ``limit`` candidates are re-scored; when the neighbours reach fewer than ``k`` clips and the shard holds
    more, the search looks once more, further out. ``rescoring``: the similar score's constants (the
    evaluation sweeps them).
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
        rows, sims = view.search(vectors, neighbours * rescoring.wider_look)
        clips, offsets, votes = vote(rows, sims, view.row_clip, view.row_frame)
    matches = best_matches(
        clips, offsets, votes, vectors, view.clip_frames, limit=limit, centre=view.centre, rescoring=rescoring
    )
    candidates = {
        view.clip_ids[mt.clip]: ShardCandidate(
            clip_id=view.clip_ids[mt.clip],
            match=MatchKind.similar,
            score=mt.score,
            votes=mt.votes,
            match_start_s=(mt.query_start + mt.offset) * FRAME_HOP_S,
            query_start_s=mt.query_start * FRAME_HOP_S,
            labels=view.clip_labels(mt.clip, mt.query_start + mt.offset, len(vectors) - mt.query_start),
        )
        for mt in matches
    }
    needed = max(settings.landmark_min_votes, settings.landmark_min_fraction * hashes.size)
    for lm in landmark_matches.result():
        # A periodic sound lines up with itself at many offsets; a true copy has one offset far above the rest.
        if lm.votes < needed or lm.votes < settings.landmark_min_peak_ratio * lm.runner_up:
            continue
        offset = round(lm.offset * landmarks.HOP_S / FRAME_HOP_S)
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
            labels=view.clip_labels(
                lm.clip, round(match_start_s / FRAME_HOP_S), len(vectors) - round(query_start_s / FRAME_HOP_S)
            ),
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


def to_result(candidate: ShardCandidate, clip: catalog.Clip) -> SearchResult:
    """A ranked candidate as the API shows it, with what the catalog knows of its clip."""
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


def missing_shards(answers: list[ShardAnswer], shards: int) -> list[int]:
    """The shards of ``range(shards)`` that gave no answer (down, or too slow for the deadline)."""
    return sorted(set(range(shards)) - {a.shard for a in answers})
