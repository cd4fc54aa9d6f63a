"""The landmark index of one shard: hash -> (clip, time) postings, answering "is this very recording, and where"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from services.search.matching import best_per_clip, neighbour_values

# A hash this common says nothing about which recording it came from (a stop word).
MAX_POSTINGS_PER_HASH = 2_000
# Postings one query reads at most: bounds a query's time however large the index grows.
MAX_POSTINGS_PER_QUERY = 300_000
# The runner-up offset must lie this many hops (160 ms) away: nearer ones are the same match, smeared by
# sub-hop shifts and sustained tones.
RUNNER_UP_GAP = 10


@dataclass
class LandmarkMatch:
    clip: int
    offset: int  # library frame minus query frame, in 16 ms hops
    votes: int  # aligned hashes, one hop of tolerance
    weight: float  # the same hashes weighted by the query's peak magnitudes (what ranks exact matches)
    runner_up: int  # aligned hashes at the clip's best other offset: chance alignments of a periodic sound
    query_start: int  # first query frame among the aligned hashes


class LandmarkPostings:
    """Postings sorted by hash; new clips go to an unsorted tail that is merged on the next query.

    ``sealed``: a snapshot's postings, sorted and memory-mapped (services/search/shard.py), searched beside this
    index's own; its clips are never added again.
    """

    def __init__(self, sealed: SortedPostings | PackedPostings | None = None) -> None:
        self._sealed = sealed
        self._hashes = np.empty(0, dtype=np.uint32)
        self._clips = np.empty(0, dtype=np.int32)
        self._times = np.empty(0, dtype=np.int32)
        self._tail: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, clip: int, hashes: np.ndarray, times: np.ndarray) -> None:
        self.add_many(np.full(hashes.size, clip, dtype=np.int32), hashes, times)

    def add_many(self, clips: np.ndarray, hashes: np.ndarray, times: np.ndarray) -> None:
        """Postings of many clips at once (clip, hash and time per posting)."""
        self._tail.append((hashes.astype(np.uint32), clips.astype(np.int32), times.astype(np.int32)))

    @property
    def nbytes(self) -> int:
        return int(self._hashes.nbytes + self._clips.nbytes + self._times.nbytes)

    def _merge(self) -> None:
        if not self._tail:
            return
        # One column at a time, each old copy dropped before the next is built: a large index sorts in about
        # twice its own size instead of three times.
        tail, self._tail = self._tail, []
        hashes = np.concatenate([self._hashes, *(t[0] for t in tail)])
        order = np.argsort(hashes, kind="stable")
        self._hashes = hashes[order]
        del hashes
        self._clips = np.concatenate([self._clips, *(t[1] for t in tail)])[order]
        self._times = np.concatenate([self._times, *(t[2] for t in tail)])[order]

    def __len__(self) -> int:
        sealed = 0 if self._sealed is None else self._sealed.size
        return int(sealed + self._hashes.size + sum(t[0].size for t in self._tail))

    def sorted_view(self) -> Postings:
        """The postings, tail merged in, as arrays no later ``add`` changes (take it under the shard's lock)."""
        self._merge()
        own = SortedPostings(self._hashes, self._clips, self._times)
        return (own,) if self._sealed is None else (self._sealed, own)

    def match(
        self, hashes: np.ndarray, times: np.ndarray, live: np.ndarray, limit: int, weights: np.ndarray | None = None
    ) -> list[LandmarkMatch]:
        return match_postings(self.sorted_view(), hashes, times, live, limit, weights)


class SortedPostings(NamedTuple):
    hashes: np.ndarray  # uint32, sorted
    clips: np.ndarray  # int32, the clip of each posting
    times: np.ndarray  # int32, its frame (16 ms hops)

    @property
    def size(self) -> int:
        return int(self.hashes.size)

    def bounds(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows [lo, hi) of each of ``hashes``' postings."""
        return np.searchsorted(self.hashes, hashes, side="left"), np.searchsorted(self.hashes, hashes, side="right")

    def posting_hashes(self) -> np.ndarray:
        return self.hashes

    def at(self, rows: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]:
        """(clip, time) of the postings at ``rows``."""
        return self.clips[rows], self.times[rows]


class HashDirectory(NamedTuple):
    """Each distinct hash of sorted postings once, and the row its postings start at: the postings then need no
    hash of their own (4 bytes a posting), and a lookup searches the few distinct hashes, not every posting."""

    keys: np.ndarray  # uint32, sorted, distinct
    starts: np.ndarray  # [keys + 1], uint32 (int64 past 2**32 postings): key i's postings are rows starts[i:i + 2]

    @classmethod
    def of(cls, hashes: np.ndarray) -> HashDirectory:
        """The directory of sorted ``hashes``."""
        distinct = np.ones(hashes.size, dtype=bool)
        distinct[1:] = hashes[1:] != hashes[:-1]
        first = np.flatnonzero(distinct)
        starts = np.append(first, hashes.size).astype(np.uint32 if hashes.size < 2**32 else np.int64)
        return cls(np.asarray(hashes[first], dtype=np.uint32), starts)

    def bounds(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows [lo, hi) of each of ``hashes``' postings (lo == hi for a hash not here)."""
        at = np.searchsorted(self.keys, hashes)
        found = self.keys[np.minimum(at, self.keys.size - 1)] == hashes if self.keys.size else at < 0
        lo = self.starts[at].astype(np.int64)
        return lo, np.where(found, self.starts[np.minimum(at + 1, self.keys.size)].astype(np.int64), lo)

    def posting_hashes(self) -> np.ndarray:
        """Every posting's hash, as the rows hold them."""
        counts: np.ndarray = np.diff(self.starts.astype(np.int64))
        return np.repeat(self.keys, counts)


class PackedPostings(NamedTuple):
    """A snapshot's postings: a hash directory, and each posting's clip and time in one uint32 (the clip above
    ``shift`` bits, the time below). 4 bytes a posting where SortedPostings takes 12, and the postings are most of
    a snapshot's bytes (~95 a frame)."""

    keys: np.ndarray  # HashDirectory's
    starts: np.ndarray
    hops: np.ndarray  # uint32: clip << shift | time
    shift: np.ndarray  # [1]: the bits of the time

    @property
    def directory(self) -> HashDirectory:
        return HashDirectory(self.keys, self.starts)

    @property
    def size(self) -> int:
        return int(self.hops.size)

    def bounds(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.directory.bounds(hashes)

    def posting_hashes(self) -> np.ndarray:
        return self.directory.posting_hashes()

    def at(self, rows: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]:
        """(clip, time) of the postings at ``rows``."""
        hops, shift = self.hops[rows], int(self.shift[0])
        return (hops >> shift).astype(np.int32), (hops & ((1 << shift) - 1)).astype(np.int32)

    @classmethod
    def pack(cls, hashes: np.ndarray, clips: np.ndarray, times: np.ndarray, count: int) -> PackedPostings | None:
        """Postings (sorted by hash) of clip positions [0, ``count``) packed; None when clip and time need more
        than 32 bits (hours-long clips among tens of thousands: they are kept as SortedPostings)."""
        shift = max(1, int(times.max(initial=0)) + 1).bit_length()
        if max(1, count - 1).bit_length() + shift > 32 or int(times.min(initial=0)) < 0:
            return None
        hops = (clips.astype(np.uint32) << np.uint32(shift)) | times.astype(np.uint32)
        return cls(*HashDirectory.of(hashes), hops, np.array([shift], dtype=np.int64))


# Sorted parts that hold disjoint clips: a snapshot's, and the postings added since.
Postings = tuple[SortedPostings | PackedPostings, ...]


def gather(
    postings: Postings, hashes: np.ndarray, budget: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every posting of ``hashes``: (which query hash, clip, time) each, over every part.

    A hash with more than MAX_POSTINGS_PER_HASH postings in all is skipped (a stop word); with a ``budget``, the
    rarest hashes are read first until it is spent.
    """
    bounds = [part.bounds(hashes) for part in postings]
    counts = sum((hi - lo for lo, hi in bounds), np.zeros(hashes.size, dtype=np.int64))
    read = counts <= MAX_POSTINGS_PER_HASH
    if budget is not None and counts[read].sum() > budget:
        # A large index: read the query's rarest hashes first (they say the most about which recording
        # this is) until the budget is spent; the common ones mostly add chance hits.
        order = np.argsort(np.where(read, counts, 0), kind="stable")
        read[order[np.cumsum(np.where(read, counts, 0)[order]) > budget]] = False
    owners, clips, times = [], [], []
    for part, (lo, hi) in zip(postings, bounds, strict=True):
        n = np.where(read, hi - lo, 0)
        total = int(n.sum())
        rows = np.repeat(lo - np.cumsum(n) + n, n) + np.arange(total)
        owners.append(np.repeat(np.arange(hashes.size), n))
        clip, time = part.at(rows)
        clips.append(clip)
        times.append(time)
    return np.concatenate(owners), np.concatenate(clips), np.concatenate(times)


def match_postings(
    postings: Postings,
    hashes: np.ndarray,
    times: np.ndarray,
    live: np.ndarray,
    limit: int,
    weights: np.ndarray | None = None,
    min_hits: int = 2,
) -> list[LandmarkMatch]:
    """The best-aligned clips for a query's landmarks; ``live[clip]`` is False for tombstoned clips.

    ``min_hits``: the hashes a (clip, offset) pair needs before its neighbours' are added (see below)."""
    if hashes.size == 0:
        return []
    if weights is None:
        weights = np.ones(hashes.size, dtype=np.float32)
    owner, clips, posted = gather(postings, hashes, MAX_POSTINGS_PER_QUERY)
    keep = live[clips]
    clips, posted, owner = clips[keep], posted[keep], owner[keep]
    if clips.size == 0:
        return []
    offsets = posted.astype(np.int64) - times[owner]
    q_times = times[owner]
    # Each (clip, offset) pair's votes, then one hop of tolerance on either side.
    base = int(offsets.min()) - 1
    span = int(offsets.max()) - base + 2
    keys = clips.astype(np.int64) * span + (offsets - base)
    uniq, inverse, counted = np.unique(keys, return_inverse=True, return_counts=True)
    weighed = np.bincount(inverse, weights=weights[owner].astype(np.float64))
    # Where in the query each pair's hits begin (its earliest query time), for every pair.
    begins = np.full(uniq.size, np.iinfo(np.int64).max)
    np.minimum.at(begins, inverse, q_times)
    # Almost every (clip, offset) pair is hit once, by chance; a real alignment gathers many hits.
    # Ranking only the pairs hit at least twice keeps a query over a large index fast (a query of a few onset
    # pairs has no hits to spare: it ranks every pair).
    repeated = np.flatnonzero(counted >= min_hits)
    if repeated.size == 0:
        return []
    pairs, counted, weighed = uniq[repeated], counted[repeated], weighed[repeated]
    counted = counted + neighbour_values(pairs, counted, -1) + neighbour_values(pairs, counted, 1)
    weighed = weighed + neighbour_values(pairs, weighed, -1) + neighbour_values(pairs, weighed, 1)
    clip_of = pairs // span
    matches = []
    for i in best_per_clip(clip_of, weighed, limit):
        key = int(pairs[i])
        clip = key // span
        # Keys are clip * span + offset, sorted: one clip's pairs are one slice, its neighbours adjacent.
        j = int(repeated[i])
        start = min(int(begins[k]) for k in range(max(0, j - 1), min(uniq.size, j + 2)) if abs(uniq[k] - key) <= 1)
        lo, hi = np.searchsorted(pairs, [clip * span, (clip + 1) * span])
        # The clip's strongest offset well away from this one.
        others = counted[lo:hi][np.abs(pairs[lo:hi] - key) > RUNNER_UP_GAP]
        matches.append(
            LandmarkMatch(
                clip=clip,
                offset=key % span + base,
                votes=int(counted[i]),
                weight=float(weighed[i]),
                runner_up=int(others.max()) if others.size else 0,
                query_start=start,
            )
        )
    return matches


def steady_clips(
    postings: Postings,
    hashes: np.ndarray,
    times: np.ndarray,
    live: np.ndarray,
    seconds: np.ndarray,
    limit: int,
) -> list[LandmarkMatch]:
    """The clips made most of a query's distinct steady hashes, each hash weighed by how rare it is.

    A steady sound is alike at every moment, so its hashes say which clip, not where. A clip scores, for each
    query hash it holds, the share of its ``seconds`` that hold it (a library clip keeps a steady hash once a
    second): a tone's own clip holds its hash throughout, an engine that passes through the same pitch for a
    moment holds it for a moment. A hash held by many clips (a mains hum's) counts for little. ``offset`` is
    one held hash's (the merge's verification searches around it); ``votes``, the hashes held.
    """
    distinct, first = np.unique(hashes, return_index=True)
    if distinct.size == 0:
        return []
    owner, clips, posted = gather(postings, distinct)
    keep = live[clips]
    clips, posted, owner = clips[keep], posted[keep], owner[keep]
    if clips.size == 0:
        return []
    # One (clip, hash) pair per hash a clip holds, however often it holds it.
    pairs, where, occurrences = np.unique(
        clips.astype(np.int64) * distinct.size + owner, return_index=True, return_counts=True
    )
    pair_clip, pair_hash = pairs // distinct.size, pairs % distinct.size
    holders = np.bincount(pair_hash, minlength=distinct.size)
    idf = np.log1p(live.sum() / np.maximum(holders, 1))
    share = np.minimum(1.0, occurrences / np.maximum(seconds[pair_clip], 1.0))
    scores = np.bincount(pair_clip, weights=idf[pair_hash] * share, minlength=live.size)
    held = np.bincount(pair_clip, minlength=live.size)
    best = [int(c) for c in np.argsort(-scores, kind="stable")[:limit] if scores[c] > 0]
    # The first held hash of each chosen clip gives its offset (the pairs are sorted by clip).
    first_pair = np.searchsorted(pair_clip, best)
    matches = []
    for clip, p in zip(best, first_pair, strict=True):
        q = first[pair_hash[p]]
        matches.append(
            LandmarkMatch(
                clip=clip,
                offset=int(posted[where[p]]) - int(times[q]),
                votes=int(held[clip]),
                weight=float(scores[clip]),
                runner_up=0,
                query_start=int(times[q]),
            )
        )
    return matches
