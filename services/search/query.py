"""A query against the index, as pure functions: one shard's candidates, their ranking, the results they make.

The Celery tasks (services/search/tasks.py) and the offline evaluation both call these, so the two give the
same answers; nothing here touches Redis or Celery.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from echovids import catalog, landmarks, onsets
from echovids.audio_params import FRAME_HOP_S, FRAME_S
from echovids.class_scores import DEFAULT_STRETCH
from echovids.errors import TextSearchUnavailable
from echovids.labels import label_ids
from echovids.schemas import MatchKind, SearchFilters, SearchResult, ShardAnswer, ShardCandidate
from echovids.settings import get_settings
from services.search.landmark_index import LandmarkMatch
from services.search.matching import RESCORING, Rescoring, aligned_score, best_matches, neighbours_for, vote
from services.search.shard import ShardIndex, ShardView
from services.search.verify import (
    SHORT_QUERY_S,
    WindowOf,
    apply_fits,
    check_waveforms,
    demote_chance_exact,
    settle_exact,
    stored_window,
)

_side = ThreadPoolExecutor(1, thread_name_prefix="landmarks")
# Landmark matches with no clear offset passed on per shard for the merge to verify, and the votes they need: a
# steady or periodic sound's own clip is nearly always the first of its list, with 3 to a few hundred votes,
# where a new sound's chance alignments have as many (docs/quality.md): the place says more than the votes.
RECHECKS = 2
RECHECK_MIN_VOTES = 3
STEADY_RECHECKS = 2  # of each of the two readings of steady pairs
STEADY_MIN_HELD = 1  # of a query's distinct steady hashes (a short tone has one; each weighs by its rarity)
# Onset pairs (echovids/onsets.py) name the clip of a click train or a run of hits, where no peak pair does; a
# train aligns at each of its repeats, so these too go to the audio to decide, by their place in the list.
ONSET_RECHECKS = 2
# A short query (a frame or two: a sound of under 1.5 s) inside a longer recording holds few hashes of its own,
# and common ones (a 0.3 s tone: one or two steady hashes that many clips hold for a moment), so its recording is
# seldom first of a list, and often a few places down one (docs/quality.md): each list passes on this many
# places, and the merge verifies them (verify.SHORT_VERIFY_RECHECKS). Short as the merge counts it: the frames
# of a recording of SHORT_QUERY_S at most (2).
SHORT_QUERY_FRAMES = 1 + int((SHORT_QUERY_S - FRAME_S) // FRAME_HOP_S)
SHORT_RECHECKS = 8


def allowed_clips(view: ShardView, filters: SearchFilters | None, allowed_ids: set[str] | None) -> np.ndarray | None:
    """The clip positions a filtered search may return (None: no filter), before the matched moment is known.

    ``allowed_ids``: the clips the catalog says pass the filters a segment does not know (source, duration).
    A labels filter keeps the clips that hold one of the labels somewhere; the moment is checked later.
    """
    labels = filters.labels if filters is not None else []
    if allowed_ids is None and not labels:
        return None
    clips = view.live.size
    mask = np.ones(clips, dtype=bool)
    if allowed_ids is not None:
        mask &= np.fromiter((c in allowed_ids for c in view.clip_ids[:clips]), dtype=bool, count=clips)
    if labels:
        wanted = set(labels)
        for position in np.flatnonzero(mask):
            names = view.clip_data.label_names(position)
            mask[position] = names is not None and not wanted.isdisjoint(names.tolist())
    return mask


def _moment_passes(filters: SearchFilters | None, labels: list[str]) -> bool:
    return filters is None or not filters.labels or not set(filters.labels).isdisjoint(labels)


def search_shard(
    index: ShardIndex,
    query_space: str,
    arrays: dict[str, np.ndarray],
    limit: int,
    k: int = 0,
    rescoring: Rescoring = RESCORING,
    filters: SearchFilters | None = None,
    allowed_ids: set[str] | None = None,
) -> list[ShardCandidate]:
    """This shard's best clips: exact landmark matches, then embedding matches voted on time offsets.

    ``limit`` candidates are re-scored; when the neighbours reach fewer than ``k`` clips and the shard holds
    more, the search looks once more, further out. ``rescoring``: the similar score's constants (the
    evaluation sweeps them). ``filters`` (with ``allowed_ids``, see ``allowed_clips``) mask the clips out of
    the neighbour search itself, so the k found are k that pass. The candidates ``sent_to_merge(found, k)`` carry
    their moment's labels, the rest none (all of them do under a labels filter).
    """
    index.check_space(query_space)
    view = index.view()  # one layout for the whole query, whatever a compaction swaps in meanwhile
    if view.rows == 0:
        return []
    settings = get_settings()
    allowed = allowed_clips(view, filters, allowed_ids)
    # Peak pairs are evidence of a copy; steady pairs only of which clips hold the sound (echovids/landmarks.py);
    # onset pairs, of which clips hold its transients, and about where.
    steady = landmarks.is_steady(arrays["hashes"])
    onset = onsets.is_onset(arrays["hashes"])
    peak = ~steady & ~onset
    weights = arrays.get("weights")
    short = len(arrays["vectors"]) <= SHORT_QUERY_FRAMES
    peak_rechecks = SHORT_RECHECKS if short else RECHECKS
    steady_rechecks = SHORT_RECHECKS if short else STEADY_RECHECKS
    onset_rechecks = SHORT_RECHECKS if short else ONSET_RECHECKS

    def match(part: np.ndarray, min_hits: int = 2) -> list[LandmarkMatch]:
        return view.match_landmarks(
            arrays["hashes"][part],
            arrays["times"][part],
            limit,
            None if weights is None else weights[part],
            allowed,
            min_hits,
        )

    # The landmark match shares nothing with the embedding search until the end: it runs beside it (both
    # spend their time in numpy and ScaNN, which release the GIL).
    landmark_matches = _side.submit(
        lambda: (
            match(peak),
            # A sweep's steady pairs change as it goes, and align in time like peak pairs; a tone's do not.
            match(steady)[:steady_rechecks],
            view.match_steady(arrays["hashes"][steady], arrays["times"][steady], steady_rechecks, allowed),
            # Three hits in an excerpt make three onset pairs: one aligned is evidence enough to look.
            match(onset, min_hits=1)[:onset_rechecks],
        )
    )
    vectors = view.project(arrays["vectors"])
    # Silent frames are zero vectors that cast no vote: the audible ones alone must reach ``limit`` clips
    # (ESC-10 similar-moment timestamped P@10 0.949 -> 0.951 through the system, docs/quality.md).
    audible = int(np.count_nonzero(vectors.any(axis=1)))
    neighbours = neighbours_for(settings.search_neighbours, limit, audible)
    rows, sims = view.search(vectors, neighbours, allowed)
    clips, offsets, votes = vote(rows, sims, view.row_clip, view.row_frame, view.clip_hops)
    reached = np.unique(clips).size
    if reached < k and view.live_clips(allowed) > reached:
        # The neighbours crowded into a few clips (a clock's ticks all sound alike: 2 of the 80 ESC-10
        # similar-moment queries got 9 results of 10 from 26 recordings), or a filter left few of them.
        rows, sims = view.search(vectors, neighbours * rescoring.wider_look, allowed)
        clips, offsets, votes = vote(rows, sims, view.row_clip, view.row_frame, view.clip_hops)
    matches = best_matches(
        clips, offsets, votes, vectors, view.clip_data, limit=limit, centre=view.centre, rescoring=rescoring
    )
    candidates = {
        view.clip_ids[mt.clip]: ShardCandidate(
            clip_id=view.clip_ids[mt.clip],
            match=MatchKind.similar,
            score=mt.score,
            votes=mt.votes,
            match_start_s=(mt.query_start + mt.offset) * FRAME_HOP_S,
            query_start_s=mt.query_start * FRAME_HOP_S,
        )
        for mt in matches
    }
    needed = max(settings.landmark_min_votes, settings.landmark_min_fraction * np.count_nonzero(peak))
    peak_matches, sweep_matches, steady_matches, onset_matches = landmark_matches.result()
    rechecks = 0  # places given to peak matches without a clear offset
    for lm in peak_matches:  # most votes first
        # A periodic sound lines up with itself at many offsets; a true copy has one offset far above the rest.
        if lm.votes < needed or lm.votes < settings.landmark_min_peak_ratio * lm.runner_up:
            # Not the evidence of a copy, but the fingerprint's best guesses at *which* clip: a steady or
            # periodic sound's own clip is among them when the embedding does not rank it (its audio decides).
            if rechecks < peak_rechecks and lm.votes >= RECHECK_MIN_VOTES:
                _recheck(candidates, view, lm, vectors, rechecks)
                rechecks += 1
            continue
        candidates[view.clip_ids[lm.clip]] = _landmark_candidate(view, lm, vectors, MatchKind.exact)
    for place, lm in enumerate(sweep_matches):
        if lm.votes >= RECHECK_MIN_VOTES:
            _recheck(candidates, view, lm, vectors, place)
    for place, lm in enumerate(steady_matches):
        if lm.votes >= STEADY_MIN_HELD:
            _recheck(candidates, view, lm, vectors, place, anywhere=True)
    for place, lm in enumerate(onset_matches):
        _recheck(candidates, view, lm, vectors, place)
    # Labels cost a read of the clip's columns each: they are given to what the merge will see, unless a labels
    # filter judges every candidate's moment.
    found_at = [m.clip for m in matches] + [
        lm.clip for lm in (*peak_matches, *sweep_matches, *steady_matches, *onset_matches)
    ]
    positions = {view.clip_ids[clip]: clip for clip in found_at}

    def labelled(candidate: ShardCandidate) -> ShardCandidate:
        start = round(candidate.match_start_s / FRAME_HOP_S)
        frames = len(vectors) - round(candidate.query_start_s / FRAME_HOP_S)
        labels = view.clip_labels(positions[candidate.clip_id], start, frames)
        return candidate.model_copy(update={"labels": labels}) if labels else candidate

    if filters is not None and filters.labels:
        passing = [c for c in map(labelled, candidates.values()) if _moment_passes(filters, c.labels)]
        return sorted(passing, key=rank_key)
    ranked = sorted(candidates.values(), key=rank_key)
    sent = {c.clip_id for c in sent_to_merge(ranked, k)}
    return [labelled(c) if c.clip_id in sent else c for c in ranked]


def _recheck(
    candidates: dict[str, ShardCandidate],
    view: ShardView,
    lm: LandmarkMatch,
    vectors: np.ndarray,
    place: int,
    anywhere: bool = False,
) -> None:
    """Flag a clip the fingerprint holds without a clear offset, for the merge to verify against its audio
    (``anywhere``: the fingerprint says which clip, not where in it)."""
    clip_id = view.clip_ids[lm.clip]
    if clip_id in candidates:
        held = candidates[clip_id]
        update: dict[str, object] = {
            "recheck": place if held.recheck is None else min(held.recheck, place),
            "anywhere": held.anywhere or anywhere,
        }
        at = lm.offset * landmarks.HOP_S  # where the fingerprint puts the query's start in the clip
        if not anywhere and abs(at - (held.match_start_s - held.query_start_s)) > FRAME_HOP_S:
            # The embedding aligned it elsewhere (hits sound alike along their clip): look at both places.
            update["recheck_at_s"] = at
        candidates[clip_id] = held.model_copy(update=update)
        return
    candidates[clip_id] = _landmark_candidate(view, lm, vectors, MatchKind.similar, recheck=place, anywhere=anywhere)


def _landmark_candidate(
    view: ShardView, lm: LandmarkMatch, vectors: np.ndarray, match: MatchKind, **flags: int | bool
) -> ShardCandidate:
    """A landmark match as a candidate: at its aligned moment, scored by the embedding there."""
    offset = round(lm.offset * landmarks.HOP_S / FRAME_HOP_S)
    match_start_s = (lm.query_start + lm.offset) * landmarks.HOP_S
    query_start_s = lm.query_start * landmarks.HOP_S
    return ShardCandidate(
        clip_id=view.clip_ids[lm.clip],
        match=match,
        score=aligned_score(vectors, view.clip_frames(lm.clip), offset, view.centre).score,
        votes=lm.weight,
        match_start_s=match_start_s,
        query_start_s=query_start_s,
        **flags,
    )


def search_text_shard(
    index: ShardIndex,
    arrays: dict[str, np.ndarray],
    limit: int,
    filters: SearchFilters | None = None,
    allowed_ids: set[str] | None = None,
    stretch: int = DEFAULT_STRETCH,
) -> list[ShardCandidate]:
    """This shard's best clips for a text's class mixture (``class_ids``, ``class_weights``), each at the start
    of its best ``stretch`` of frames; the labels filter is checked at that moment, before ``limit`` is reached."""
    view = index.view()
    if view.rows == 0:
        return []
    allowed = allowed_clips(view, filters, allowed_ids)
    mask = np.ones(view.live.size, dtype=bool) if allowed is None else allowed
    first = None if filters is not None and filters.labels else limit  # the labels are judged at each moment
    positions, scores, starts = view.match_classes(arrays["class_ids"], arrays["class_weights"], mask, stretch, first)
    found: list[ShardCandidate] = []
    for position, score, frame in zip(positions.tolist(), scores.tolist(), starts.tolist(), strict=True):
        hop = view.clip_data[position].hop
        start = frame * hop  # in query hops, as every moment of a search
        labels = view.clip_labels(position, start, stretch * hop)
        if not _moment_passes(filters, labels):
            continue
        found.append(
            ShardCandidate(
                clip_id=view.clip_ids[position],
                match=MatchKind.similar,
                score=score,
                votes=score,
                match_start_s=start * FRAME_HOP_S,
                query_start_s=0.0,
                labels=labels,
            )
        )
        if len(found) >= limit:
            break
    if not found and view.live_clips() and not view.scored_clips():
        raise TextSearchUnavailable(
            "This library's clips carry no sound class scores to search by description: VGGish gives none, and "
            "a YAMNet library indexed before search by description needs `echovids reindex-classes` once."
        )
    return found


def rank_key(candidate: ShardCandidate) -> tuple[bool, float]:
    """Exact matches (this very recording) first, by loudness-weighted alignment; then the most similar."""
    exact = candidate.match == MatchKind.exact
    return (not exact, -candidate.votes if exact else -candidate.score)


def rank_answers(
    candidates: list[ShardCandidate],
    k: int,
    query_audio: Callable[[], np.ndarray | None],
    window_of: WindowOf = stored_window,
) -> list[ShardCandidate]:
    """The shards' candidates as one ranked list of ``forwarded(k)``.

    The leading candidates are checked against the clips' audio (services/search/verify.py): what holds the
    query's very waveform is exact, at that moment, and first; what holds much of it under other sound leads
    the similar ones. Where nothing verifies (no query audio, a text search, a query too altered to keep its
    waveform), the landmark matches decide: of several recordings that hold the query, the one it mostly is
    goes first, and exact matches far weaker than it are chance alignments, ranked as similar.
    """
    ranked = sorted(candidates, key=rank_key)
    query = query_audio()  # once: in the merge it is a read from Redis
    if query is None or not query.size:
        settled = _by_landmarks(ranked[: forwarded(k)], query, window_of)
    else:
        verified, partial, rest = apply_fits(ranked, check_waveforms(ranked, query, window_of))
        if not verified:
            # Nothing holds the query's very waveform: the landmarks decide, less the matches shown to be chance.
            rest = _by_landmarks(sorted(rest, key=rank_key), query, window_of)
        exact = [c for c in rest if c.match == MatchKind.exact]
        similar = sorted((c for c in rest if c.match != MatchKind.exact), key=rank_key)  # the demoted among them
        settled = (verified + exact + partial + similar)[: forwarded(k)]
    # What a shard asked the merge to verify means nothing past it.
    return [c.model_copy(update={"recheck": None, "anywhere": False, "recheck_at_s": None}) for c in settled]


def _by_landmarks(ranked: list[ShardCandidate], query: np.ndarray | None, window_of: WindowOf) -> list[ShardCandidate]:
    return demote_chance_exact(settle_exact(ranked, lambda: query, window_of))


def forwarded(k: int) -> int:
    """Candidates a query carries past the search: more than k, so dead videos can be back-filled."""
    return max(k * 3, k + 10)


def sent_to_merge(found: list[ShardCandidate], k: int) -> list[ShardCandidate]:
    """What a shard sends the merge of its ranked candidates: the first ``forwarded(k)``, and every one the
    fingerprints asked the merge to verify. A recheck (a tone's own clip, held by its steady hashes) is most
    often far down a list ranked by embedding score, and the merge's audio is what can name it exact."""
    head = found[: forwarded(k)]
    return head + [c for c in found[len(head) :] if c.recheck is not None]


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
        period_s=candidate.period_s,
        labels=labels,
        label_ids=label_ids(labels),
        available=True if clip.source_kind == "file" else None,
    )


def missing_shards(answers: list[ShardAnswer], shards: int) -> list[int]:
    """The shards of ``range(shards)`` that gave no answer (down, or too slow for the deadline)."""
    return sorted(set(range(shards)) - {a.shard for a in answers})
