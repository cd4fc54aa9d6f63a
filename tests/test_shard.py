"""The shard index on disk and in memory: delta, compaction, hot swap, tombstones, restarts, damage."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from services.search.query import search_shard
from services.search.shard import ShardIndex

SPACE = "test:1:32"
SWAPS = 5


def random_clip(rng: np.random.Generator, frames: int = 12, dim: int = 32) -> dict[str, np.ndarray]:
    vectors = rng.standard_normal((frames, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    hashes = rng.integers(0, 2**22, size=frames * 40).astype(np.uint32)
    times = np.sort(rng.integers(0, frames * 30, size=hashes.size)).astype(np.int32)
    return {"vectors": vectors, "hashes": hashes, "times": times}


def excerpt(clip: dict[str, np.ndarray], start: int, frames: int = 5) -> dict[str, np.ndarray]:
    """A query of the clip's frames [start, start + frames), with the landmarks of that stretch."""
    t0, t1 = start * 30, (start + frames) * 30
    sel = (clip["times"] >= t0) & (clip["times"] < t1)
    return {
        "vectors": clip["vectors"][start : start + frames],
        "hashes": clip["hashes"][sel],
        "times": clip["times"][sel] - t0,
    }


@pytest.fixture
def library(tmp_path: Path) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    rng = np.random.default_rng(1)
    clips = {f"clip{i:03d}": random_clip(rng) for i in range(40)}
    index = ShardIndex(tmp_path, 0)
    for clip_id, arrays in clips.items():
        index.write_segment(clip_id, arrays, SPACE)
    return tmp_path, clips


def top(index: ShardIndex, query: dict[str, np.ndarray]) -> tuple[str, float, str]:
    best = max(search_shard(index, SPACE, query, limit=5), key=lambda c: (c.match == "exact", c.score))
    return best.clip_id, round(best.match_start_s, 2), best.match.value


def test_delta_is_searched_exactly_then_compaction_seals_it(library) -> None:
    root, clips = library
    index = ShardIndex(root, 0)
    assert index.version == 0 and index.delta_rows == index.rows == 40 * 12
    before = {cid: top(index, excerpt(arrays, 4)) for cid, arrays in list(clips.items())[:10]}
    assert all(found[0] == cid for cid, found in before.items())
    assert index.compact() == 1
    assert index.delta_rows == 0
    assert {cid: top(index, excerpt(arrays, 4)) for cid, arrays in list(clips.items())[:10]} == before


def test_hot_swap_under_concurrent_queries(library) -> None:
    root, clips = library
    replica, compactor = ShardIndex(root, 0), ShardIndex(root, 0)
    queries = [(cid, excerpt(arrays, 3)) for cid, arrays in list(clips.items())[:8]]
    expected = {cid: top(replica, q) for cid, q in queries}
    errors: list[BaseException] = []
    seen: list[dict[str, tuple[str, float, str]]] = []
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            try:
                seen.append({cid: top(replica, q) for cid, q in queries})
            except BaseException as exc:  # any failure of a query during the swap is the bug we look for
                errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for _ in range(SWAPS):  # each swap is one chance for a query to straddle two layouts
        compactor.compact()
        replica.refresh()  # what a replica does when it sees the generation move
        seen_before = len(seen)
        while len(seen) < seen_before + 2:
            threading.Event().wait(0.01)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert replica.version == SWAPS
    assert all(answer == expected for answer in seen)


def test_tombstones_filter_at_once_and_are_purged_by_compaction(library) -> None:
    root, clips = library
    index = ShardIndex(root, 0)
    index.compact()
    victim = "clip005"
    index.write_tombstone(victim)
    index.refresh()
    assert top(index, excerpt(clips[victim], 2))[0] != victim
    index.compact()
    assert not (index.segments / f"{victim}.npz").exists()
    assert not (index.tombstones / victim).exists()
    assert victim not in index.clip_ids
    assert top(ShardIndex(root, 0), excerpt(clips[victim], 2))[0] != victim


def test_centre_is_the_live_clips_average_audible_frame(library) -> None:
    root, clips = library
    index = ShardIndex(root, 0)
    quiet = random_clip(np.random.default_rng(3))
    quiet["vectors"][4:] = 0.0  # muted silence: no sound, so no part of the library's average sound
    index.write_segment("quiet", quiet, SPACE)
    index.add_segment("quiet")

    def expected(*gone: str) -> np.ndarray:
        frames = np.concatenate([a["vectors"] for c, a in {**clips, "quiet": quiet}.items() if c not in gone])
        return frames[frames.any(axis=1)].astype(np.float16).astype(np.float64).mean(axis=0)

    np.testing.assert_allclose(index.view().centre, expected(), atol=1e-6)
    index.compact()
    np.testing.assert_allclose(index.view().centre, expected(), atol=1e-6)
    index.write_tombstone("clip007")
    index.refresh()  # the tombstoned clip keeps its sealed rows until the next compaction, not its say
    np.testing.assert_allclose(index.view().centre, expected("clip007"), atol=1e-6)
    index.compact()
    np.testing.assert_allclose(ShardIndex(root, 0).view().centre, expected("clip007"), atol=1e-6)


def test_restart_loads_newest_snapshot_plus_delta(library) -> None:
    root, clips = library
    index = ShardIndex(root, 0)
    index.compact()
    rng = np.random.default_rng(9)
    late = random_clip(rng)
    index.write_segment("late", late, SPACE)
    index.refresh()
    restarted = ShardIndex(root, 0)
    assert restarted.version == 1
    assert restarted.delta_rows == 12
    assert top(restarted, excerpt(late, 5))[0] == "late"
    assert top(restarted, excerpt(clips["clip020"], 1)) == top(index, excerpt(clips["clip020"], 1))


def test_damaged_or_half_written_snapshot_is_never_loaded(library) -> None:
    root, clips = library
    index = ShardIndex(root, 0)
    index.compact()
    index.compact()
    newest = index.snapshots / "v2"
    for path in (newest / "scann").iterdir():
        path.write_bytes(path.read_bytes()[:10])  # truncated on disk
    half = index.snapshots / "v3"
    (half / "scann").mkdir(parents=True)  # no COMPLETE marker: a compaction that died midway
    restarted = ShardIndex(root, 0)
    assert restarted.version == 1
    assert top(restarted, excerpt(clips["clip030"], 6))[0] == "clip030"


def test_space_mismatch_is_refused(library) -> None:
    root, clips = library
    index = ShardIndex(root, 0)
    with pytest.raises(Exception, match="embedding space"):
        search_shard(index, "other:1:32", excerpt(clips["clip001"], 0), limit=3)


def test_results_name_what_the_matched_moment_holds(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    clip = random_clip(rng, frames=12)
    # Frames 0-5 are mostly "Bark", frames 6-11 mostly "Rain".
    names = np.array(["Bark", "Dog", "Rain", "Water"])
    clip["label_names"] = names
    clip["frame_labels"] = np.array([[0, 1, 3]] * 6 + [[2, 3, 1]] * 6, dtype=np.int16)
    index = ShardIndex(tmp_path, 0)
    index.write_segment("labelled", clip, SPACE)
    restarted = ShardIndex(tmp_path, 0)  # the labels survive on disk
    position = restarted.clip_pos["labelled"]
    assert restarted.view().clip_labels(position, 0, 4) == ["Bark", "Dog", "Water"]
    assert restarted.view().clip_labels(position, 7, 5)[0] == "Rain"
    best = search_shard(restarted, SPACE, excerpt(clip, 7, frames=4), limit=3)[0]
    assert best.clip_id == "labelled" and best.labels[0] == "Rain"


def test_neighbours_crowded_into_few_clips_look_further_for_k_results(library) -> None:
    root, _ = library
    index = ShardIndex(root, 0)
    rng = np.random.default_rng(5)
    tick = rng.standard_normal(32).astype(np.float32)

    def ticking(frames: int) -> np.ndarray:
        vectors = tick + 0.01 * rng.standard_normal((frames, 32)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    for i in range(3):  # 36 frames alike: every query frame's 20 nearest lie in two or three of these clips
        index.write_segment(f"tick{i}", {**random_clip(rng), "vectors": ticking(12)}, SPACE)
    index.refresh()
    query = {**excerpt(random_clip(rng), 0), "vectors": ticking(5)}
    assert len(search_shard(index, SPACE, query, limit=5)) < 5
    found = search_shard(index, SPACE, query, limit=5, k=5)
    assert len(found) == 5
    assert {c.clip_id for c in found[:3]} == {"tick0", "tick1", "tick2"}


def test_a_mostly_silent_query_reaches_as_many_clips_as_a_loud_one(library) -> None:
    root, clips = library
    index = ShardIndex(root, 0)
    query = excerpt(clips["clip007"], 2, frames=9)
    query["vectors"] = query["vectors"].copy()
    query["vectors"][1:] = 0  # muted silence: one audible frame of nine votes
    found = search_shard(index, SPACE, query, limit=30)
    assert len(found) >= 30
    assert found[0].clip_id == "clip007"


def test_silent_query_frames_are_not_searched(library) -> None:
    root, clips = library
    view = ShardIndex(root, 0).view()
    query = excerpt(clips["clip003"], 2)["vectors"].astype(np.float32)
    muted = query.copy()
    muted[[0, 2]] = 0
    rows, sims = view.search(muted, 5)
    assert (rows[[0, 2]] == -1).all() and (sims[[0, 2]] == 0).all()
    np.testing.assert_array_equal(rows[[1, 3, 4]], view.search(query, 5)[0][[1, 3, 4]])
    assert view.search(np.zeros_like(query), 5)[0].shape == (5, 0)
