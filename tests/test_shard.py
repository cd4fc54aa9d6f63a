"""The shard index on disk and in memory: delta, compaction, hot swap, tombstones, restarts, damage."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from echovids.settings import get_settings
from echovids.vectors import int8_rows
from services.search import shard as shard_module
from services.search.query import search_shard
from services.search.shard import ShardIndex

SPACE = "test:1:32"
SWAPS = 5


def random_clip(rng: np.random.Generator, frames: int = 12, dim: int = 32) -> dict[str, np.ndarray]:
    vectors = rng.standard_normal((frames, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # Peak pairs only (dt field under 49: echovids/landmarks.py): steady pairs would make extra candidates.
    hashes = (rng.integers(0, 2**16, size=frames * 40) << 6 | rng.integers(0, 49, size=frames * 40)).astype(np.uint32)
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


def test_a_snapshots_arrays_are_mapped_for_scattered_reads(library) -> None:
    """A query reads scattered rows and posting lists of a snapshot's mapped arrays: each is advised random, else
    the kernel's readahead reads (and maps) many times the pages a query uses from a cold file."""
    root, _ = library
    ShardIndex(root, 0).compact()
    index = ShardIndex(root, 0)  # a search process's load: the snapshot mapped
    assert index.version == 1
    flags: dict[str, str] = {}
    mapped = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", fields[0]):  # a mapping's first line: its path, if it has one
            mapped = fields[5] if len(fields) >= 6 and fields[5].startswith(str(root)) else None
        elif mapped is not None and fields[0] == "VmFlags:":
            flags[Path(mapped).name] = line
    assert {"codes.npy", "landmark_hops.npy"} <= set(flags), flags
    assert all(" rr " in f + " " for f in flags.values()), flags


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


def test_a_snapshot_keeps_its_postings_renumbered_past_deletes_and_new_clips(library) -> None:
    """The next snapshot's postings are the last one's (mapped) and the delta's, its deleted clips left out and
    every clip numbered anew; a sealed clip keeps no landmarks of its own in memory."""
    root, clips = library
    index = ShardIndex(root, 0)
    index.compact()
    rng = np.random.default_rng(11)
    late = {f"late{i}": random_clip(rng) for i in range(3)}
    for clip_id, arrays in late.items():
        index.write_segment(clip_id, arrays, SPACE)
    everything = {**clips, **late}
    victims = {"clip000", "clip013", "clip027"}
    kept = [cid for cid in everything if cid not in victims]
    # The same clips searched from their segments alone: a fresh shard that never compacted.
    fresh = ShardIndex(root / "fresh", 0)
    for cid in kept:
        fresh.write_segment(cid, everything[cid], SPACE)
    fresh.refresh()
    expected = {cid: top(fresh, excerpt(everything[cid], 4)) for cid in kept}
    assert all(found[0] == cid and found[2] == "exact" for cid, found in expected.items())
    for victim in victims:
        index.write_tombstone(victim)
    index.refresh()
    assert index.compact() == 2
    for shard in (index, ShardIndex(root, 0)):
        assert all(data.hashes.size == 0 for data in shard.view().clip_data)
        assert len(shard.landmarks) == sum(everything[cid]["hashes"].size for cid in kept)
        assert {cid: top(shard, excerpt(everything[cid], 4)) for cid in kept} == expected


def test_centre_is_the_live_clips_average_audible_frame(library) -> None:
    root, clips = library
    index = ShardIndex(root, 0)
    quiet = random_clip(np.random.default_rng(3))
    quiet["vectors"][4:] = 0.0  # muted silence: no sound, so no part of the library's average sound
    index.write_segment("quiet", quiet, SPACE)
    index.add_segment("quiet")

    def expected(*gone: str, sealed: bool = False) -> np.ndarray:
        frames = np.concatenate([a["vectors"] for c, a in {**clips, "quiet": quiet}.items() if c not in gone])
        frames = frames.astype(np.float16)
        if sealed:  # a snapshot keeps its frames as int8 codes
            codes, scales = int8_rows(frames)
            frames = codes * scales[:, None]
        return frames[frames.any(axis=1)].astype(np.float64).mean(axis=0)

    np.testing.assert_allclose(index.view().centre, expected(), atol=1e-6)
    index.compact()
    np.testing.assert_allclose(index.view().centre, expected(sealed=True), atol=1e-6)
    index.write_tombstone("clip007")
    index.refresh()  # the tombstoned clip keeps its sealed rows until the next compaction, not its say
    np.testing.assert_allclose(index.view().centre, expected("clip007", sealed=True), atol=1e-6)
    index.compact()
    np.testing.assert_allclose(ShardIndex(root, 0).view().centre, expected("clip007", sealed=True), atol=1e-6)


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


def smooth_clip(rng: np.random.Generator, frames: int, dim: int = 32) -> np.ndarray:
    """Unit frames that change gradually (as a sound's embeddings do from one hop to the next)."""
    walk = np.cumsum(rng.standard_normal((frames, dim)), axis=0) + 3 * rng.standard_normal(dim)
    return (walk / np.linalg.norm(walk, axis=1, keepdims=True)).astype(np.float32)


def hop_of(index: ShardIndex, clip_id: str) -> int:
    return index.view().clip_data[index.clip_pos[clip_id]].hop


def test_clips_at_two_hops_a_frame_match_to_the_query_hop_through_compaction_and_restart(library) -> None:
    """A shard holds clips at the query's hop beside clips stored every two hops (AudioSet's 0.96 s features);
    a query at the query hop finds a coarse clip at either phase, at the right second, before and after the
    snapshot, after a restart, and from a snapshot written before it kept each clip's hop (all at one hop)."""
    import json

    from echovids.audio_params import FRAME_HOP_S
    from services.search.matching import Upsampled

    root, _ = library
    rng = np.random.default_rng(12)
    coarse = {f"coarse{i}": smooth_clip(rng, 10) for i in range(6)}
    none = {"hashes": np.zeros(0, np.uint32), "times": np.zeros(0, np.int32)}
    index = ShardIndex(root, 0)
    for clip_id, vectors in coarse.items():
        index.write_segment(clip_id, {"vectors": vectors, **none}, SPACE, hop_s=2 * FRAME_HOP_S)
    with pytest.raises(ValueError, match="whole multiple"):
        index.write_segment("odd", {"vectors": coarse["coarse0"], **none}, SPACE, hop_s=0.7)
    index.refresh()

    def found(index: ShardIndex, first: int) -> tuple[str, float]:
        query = Upsampled(coarse["coarse3"].astype(np.float16), 2)[first : first + 6].astype(np.float32)
        best = max(search_shard(index, SPACE, {"vectors": query, **none}, limit=5), key=lambda c: c.score)
        return best.clip_id, round(best.match_start_s - best.query_start_s, 2)

    for first in (4, 7):  # on a stored frame, and between two
        assert found(index, first) == ("coarse3", round(first * FRAME_HOP_S, 2))
    index.compact()
    restarted = ShardIndex(root, 0)
    assert hop_of(restarted, "coarse3") == 2 and hop_of(restarted, "clip001") == 1
    for first in (4, 7):
        assert found(index, first) == found(restarted, first) == ("coarse3", round(first * FRAME_HOP_S, 2))

    # A snapshot from before the hops were kept: no clip_hops array, and every clip read at one hop.
    snapshot = root / "shards" / "0" / "snapshots" / f"v{restarted.version}"
    manifest = json.loads((snapshot / "manifest.json").read_text())
    del manifest["arrays"]["clip_hops"]
    (snapshot / "manifest.json").write_text(json.dumps(manifest))
    (snapshot / "clip_hops.npy").unlink()
    legacy = ShardIndex(root, 0)
    assert legacy.version == restarted.version and hop_of(legacy, "coarse3") == 1


def test_the_clip_table_reads_many_clips_at_once_as_it_reads_each(library) -> None:
    """A query aligns ~100 candidates: the snapshot's are gathered from its columns in one go (a coarse clip's
    positions between two stored frames mixed as Upsampled mixes them, a muted frame included), the rest read
    one by one; either way the block is the frames each clip holds there, zeros outside it."""
    from echovids.audio_params import FRAME_HOP_S
    from services.search.matching import EachClip

    root, _ = library
    rng = np.random.default_rng(21)
    none = {"hashes": np.zeros(0, np.uint32), "times": np.zeros(0, np.int32)}
    index = ShardIndex(root, 0)
    coarse = smooth_clip(rng, 9)
    coarse[4] = 0.0  # muted
    index.write_segment("coarse", {"vectors": coarse, **none}, SPACE, hop_s=2 * FRAME_HOP_S)
    index.refresh()
    index.compact()
    index.write_segment("late", random_clip(rng), SPACE)  # placed after the snapshot: read one by one
    index.write_segment("late-coarse", {"vectors": smooth_clip(rng, 5), **none}, SPACE, hop_s=2 * FRAME_HOP_S)
    index.refresh()
    table = index.view().clip_data
    names = ["clip000", "clip017", "coarse", "late", "late-coarse", "coarse"]
    positions = np.array([index.clip_pos[n] for n in names], dtype=np.int64)
    first = np.array([-3, 5, 1, 8, -1, 12], dtype=np.int64)
    assert table.sealed is not None and table.sealed.lengths(positions[:3]).tolist() == [12, 12, 18]

    each = EachClip(table.frames)
    np.testing.assert_array_equal(table.lengths(positions), each.lengths(positions))
    block = table.block(positions, first, 10)
    np.testing.assert_allclose(block, each.block(positions, first, 10), atol=1e-6)
    assert not block[0, :3].any() and block[0, 3:].any()  # before clip000's first frame
    assert not block[5, 6:].any() and block[5, :6].any()  # past the coarse clip's 18 positions
    np.testing.assert_allclose(table.block(positions[:3], first[:3], 10), block[:3], atol=1e-6)  # all sealed


def test_rescored_keeps_the_best_k_of_each_frame_by_the_stored_codes_and_pads_what_scann_did_not_find() -> None:
    """ScaNN pads a short list with row 0 and a NaN score: those come back as row -1, score 0, after every real
    candidate, whatever row 0 scores; the rest are ordered by the codes' products, not ScaNN's estimates."""
    from services.search.matching import Int8Frames

    rng = np.random.default_rng(5)
    library = rng.standard_normal((50, 16)).astype(np.float32)
    library /= np.linalg.norm(library, axis=1, keepdims=True)
    stored = Int8Frames(*int8_rows(library))
    queries = library[[7, 9]] + 0.01 * rng.standard_normal((2, 16)).astype(np.float32)
    rows = np.array([[3, 7, 4, 11, 0, 0], [9, 2, 5, 6, 8, 1]], dtype=np.uint32)
    sims = rng.random(rows.shape).astype(np.float32)  # ScaNN's estimates: ignored
    sims[0, 4:] = np.nan
    queries[0] = library[0]  # row 0, the pad, would win if it were scored

    found, scores = shard_module.rescored(stored, queries, rows, sims, 5)

    decoded = stored.codes.astype(np.float32) * stored.scales[:, None]
    assert sorted(found[0].tolist()) == [-1, 3, 4, 7, 11] and scores[0][found[0] == -1].tolist() == [0.0]
    best = np.argsort(-(decoded[rows[1].astype(np.int64)] @ queries[1]))[:5]
    assert sorted(found[1].tolist()) == sorted(rows[1][best].tolist())
    real = found >= 0
    np.testing.assert_allclose(
        scores[real],
        np.einsum("ij,ij->i", decoded[found[real]], np.repeat(queries, 5, axis=0)[real.ravel()]),
        rtol=1e-5,
    )
    unscored, plain = shard_module.rescored(None, queries, rows, sims, 5)
    assert unscored[0, 4:].tolist() == [-1, -1] and plain[0, 4:].tolist() == [0.0, 0.0]


def test_a_large_shard_maps_its_frames_as_int8_codes_and_rescores_scann_candidates_from_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Past the brute-force size ScaNN keeps no vectors: its candidates are re-scored from the snapshot's int8
    codes of the frames, mapped (not read) by every process, and each sealed clip's frames are views of them. A
    start takes the centre from the snapshot's frame total; a snapshot written before the codes re-scores from
    its float16 frames."""
    monkeypatch.setattr(shard_module, "SCANN_BRUTE_FORCE_BELOW", 500)
    # Every leaf searched: what is left to test is the re-scoring (the leaves' recall is the benchmark's).
    monkeypatch.setenv("ECHOVIDS_SEARCH_SCANN_LEAVES_TO_SEARCH", "1000")
    get_settings.cache_clear()
    request.addfinalizer(get_settings.cache_clear)
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((30, 32)).astype(np.float32)
    index = ShardIndex(tmp_path, 0)
    stored = []
    for c in range(150):  # 1800 rows in clusters, as sounds cluster: a tree with leaves to choose from
        arrays = random_clip(rng)
        vectors = centres[rng.integers(0, 30)] + 0.5 * arrays["vectors"]
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors[0] = 0.0  # a muted frame: no part of the centre
        arrays["vectors"] = vectors
        index.write_segment(f"clip{c:03d}", arrays, SPACE)
        stored.append(arrays["vectors"].astype(np.float16))
    index.refresh()
    index.compact()
    snapshot = index.snapshots / "v1"
    assert not any(p.name == "dataset.npy" for p in (snapshot / "scann").iterdir())  # no float32 copy
    assert not (snapshot / "vectors.npy").exists()  # nor a float16 one
    float16 = np.concatenate(stored)
    codes, scales = int8_rows(float16)
    rng_queries = np.random.default_rng(4)

    def searched(shard: ShardIndex, library: np.ndarray, mapped_names: tuple[str, ...]) -> None:
        view = shard.view()
        assert view.searcher is not None and view.searcher.rescore >= 100 and view.delta is None
        columns = view.searcher.columns
        assert columns is not None
        for name in mapped_names:
            assert not columns[name].flags.owndata and not columns[name].flags.writeable
        first = columns[mapped_names[0]]
        assert all(np.shares_memory(getattr(d.vectors, "codes", d.vectors), first) for d in view.clip_data)
        audible = library[library.any(axis=1)]
        np.testing.assert_allclose(view.centre, audible.mean(axis=0), atol=1e-6)
        picks = audible[rng_queries.choice(audible.shape[0], 40, replace=False)]
        queries = picks + 0.05 * rng_queries.standard_normal((40, 32))
        queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
        rows, sims = view.search(queries, 10)
        exact = np.argsort(-(queries @ library.T), axis=1)[:, :10]
        recall = np.mean([len(set(r) & set(e)) / 10 for r, e in zip(rows.tolist(), exact.tolist())])
        # Not 1: the 100 candidates are ScaNN's quantised guesses among near-ties (0.97-1.00 run to run: its
        # training is threaded).
        assert recall >= 0.95, recall
        found = rows >= 0
        # The scores are the stored frames' own dot products, not ScaNN's quantised estimates.
        np.testing.assert_allclose(
            sims[found],
            np.einsum("ij,ij->i", library[rows[found]], np.repeat(queries, 10, axis=0)[found.ravel()]),
            rtol=1e-5,
            atol=1e-5,
        )

    for shard in (index, ShardIndex(tmp_path, 0)):  # the compactor and a restarted process
        searched(shard, codes * scales[:, None], ("codes", "code_scales"))
    # The same snapshot as one written before the codes: float16 frames, no total.
    manifest = json.loads((snapshot / "manifest.json").read_text())
    for name in ("codes", "code_scales", "frame_total"):
        (snapshot / f"{name}.npy").unlink()
        del manifest["arrays"][name]
    np.save(snapshot / "vectors.npy", float16)
    manifest["arrays"]["vectors"] = shard_module.file_digest(snapshot / "vectors.npy")
    (snapshot / "manifest.json").write_text(json.dumps(manifest))
    searched(ShardIndex(tmp_path, 0), float16.astype(np.float32), ("vectors",))


def test_every_frame_of_a_scann_indexed_shard_is_within_reach_of_itself() -> None:
    """Frames of smoothly changing sounds (128-d, AudioSet's kind): each is among its own 10 nearest. With plain
    k-means means for partition centres, 2.5 % of 33 000 were in leaves no query reaches (docs/benchmarks.md)."""
    from benchmarks.feature_hop import sounds
    from benchmarks.sound_space import SoundSpace

    rng = np.random.default_rng(0)
    frames = sounds(rng, SoundSpace.draw(rng, 128), 3000)[:, 0::2].reshape(-1, 128)
    data = frames.astype(np.float16).astype(np.float32)
    searcher, _ = shard_module.scann_searcher(data, neighbours=10)
    rows, _ = searcher.search_batched(data, final_num_neighbors=10)
    reached = (rows == np.arange(len(data))[:, None]).any(axis=1)
    assert len(data) > shard_module.SCANN_BRUTE_FORCE_BELOW and reached.mean() >= 0.999, reached.mean()


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
    """By a shard reading its segments, and by one started from a snapshot alone (it reads none)."""
    root, clips = library
    index = ShardIndex(root, 0)
    with pytest.raises(Exception, match="embedding space"):
        search_shard(index, "other:1:32", excerpt(clips["clip001"], 0), limit=3)
    index.compact()
    restarted = ShardIndex(root, 0)
    assert restarted.space == SPACE
    with pytest.raises(Exception, match="embedding space"):
        search_shard(restarted, "other:1:32", excerpt(clips["clip001"], 0), limit=3)


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


def _scramble(path: Path, keep_head: int, seed: int = 3) -> None:
    """Random bytes over a file's body, its first ``keep_head`` bytes (the header) intact, same length."""
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    data[keep_head:] = rng.integers(0, 256, size=len(data) - keep_head, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damaged", ["scann", "codes", "landmark_starts", "landmark_hops"])
def test_a_snapshot_with_random_bytes_under_its_headers_is_set_aside_and_rebuilt(library, damaged: str) -> None:
    """Loaded as is, such a snapshot answers wrongly but silently; its checksums catch it, the segments answer."""
    root, clips = library
    index = ShardIndex(root, 0)
    index.compact()
    queries = {cid: excerpt(arrays, 3) for cid, arrays in list(clips.items())[:12]}
    before = {cid: search_shard(index, SPACE, q, limit=10) for cid, q in queries.items()}
    snapshot = index.snapshots / "v1"
    dataset = max((snapshot / "scann").rglob("*.npy"), key=lambda p: p.stat().st_size)
    if damaged != "scann":  # one of the arrays every process maps
        dataset = snapshot / f"{damaged}.npy"
    _scramble(dataset, keep_head=128)  # an .npy header is 128 bytes: the array loads, with other values
    restarted = ShardIndex(root, 0)
    assert restarted.version == 0 and restarted.rebuild_wanted
    assert not (restarted.snapshots / "v1").exists()
    assert [p.name for p in restarted.quarantine.iterdir()] == [f"snapshot-v1.{os.getpid()}.bad"]
    after = {cid: search_shard(restarted, SPACE, q, limit=10) for cid, q in queries.items()}
    # The segments hold the frames in float16, the snapshot as int8 codes: the copy is found alike, first and
    # at its moment; the similar tail may swap a near-tie.
    for cid in queries:
        assert (after[cid][0].clip_id, after[cid][0].match_start_s) == (
            before[cid][0].clip_id,
            before[cid][0].match_start_s,
        )
        assert after[cid][0].clip_id == cid
        assert len({r.clip_id for r in after[cid]} & {r.clip_id for r in before[cid]}) >= 8
    assert restarted.compact() == 2 and not restarted.rebuild_wanted  # the rebuild the search service queues


def test_a_segment_with_random_bytes_under_its_header_is_set_aside_and_its_clip_named(library) -> None:
    root, clips = library
    index = ShardIndex(root, 0)
    index.compact()
    victim = index.segments / "clip007.npz"
    with zipfile.ZipFile(victim) as z:
        member = z.getinfo("vectors.npy")
    # The stored (uncompressed) member's array bytes: past the zip entry's local header and the .npy header.
    start = member.header_offset + 30 + len(member.filename) + 128 + 16
    data = bytearray(victim.read_bytes())
    data[start : start + 200] = np.random.default_rng(5).integers(0, 256, 200, dtype=np.uint8).tobytes()
    victim.write_bytes(bytes(data))
    # The snapshot holds the clip's columns itself (checked by its own checksums): its segment is not read.
    restarted = ShardIndex(root, 0)
    assert restarted.take_quarantined() == [] and restarted.version == 1
    assert top(restarted, excerpt(clips["clip007"], 2))[0] == "clip007"
    # Without the snapshot the segments are read, and the damaged one is found.
    _scramble(index.snapshots / "v1" / "codes.npy", keep_head=128)
    restarted = ShardIndex(root, 0)
    assert restarted.take_quarantined() == ["clip007"] and restarted.take_quarantined() == []
    assert not victim.exists() and sorted(p.name for p in restarted.quarantine.iterdir()) == [
        f"clip007.npz.{os.getpid()}.bad",
        f"snapshot-v1.{os.getpid()}.bad",
    ]
    assert restarted.rebuild_wanted and restarted.version == 0
    assert "clip007" not in restarted.clip_ids and len(restarted.clip_ids) == 39
    assert top(restarted, excerpt(clips["clip030"], 6))[0] == "clip030"
    # The clip embedded again (the search service sends it from its stored audio) is found as before.
    restarted.write_segment("clip007", clips["clip007"], SPACE)
    restarted.refresh()
    assert top(restarted, excerpt(clips["clip007"], 2))[0] == "clip007"


def test_a_segment_whose_checksum_does_not_match_is_set_aside(library) -> None:
    """Damage a zip's own CRC would not catch (the member rewritten whole): the segment's checksum does."""
    root, _ = library
    victim = root / "shards" / "0" / "segments" / "clip011.npz"
    with np.load(victim) as data:
        columns = {name: data[name] for name in data.files}
    columns["vectors"] = columns["vectors"][::-1].copy()
    np.savez(victim, **columns)
    restarted = ShardIndex(root, 0)
    assert restarted.take_quarantined() == ["clip011"] and "clip011" not in restarted.clip_ids


def test_a_damaged_clip_is_embedded_again_from_its_audio_or_failed_with_a_code(env: Path, tmp_path: Path) -> None:
    """What the search service does with a set-aside segment's clip (real catalog, real Redis queue)."""
    from echovids import catalog, clip_audio
    from echovids.harness import write_wav
    from echovids.jobs import JobStore
    from echovids.library import list_clips, recover_clip
    from echovids.schemas import ClipStatus
    from tests.sounds import synthetic_library

    wav = write_wav(tmp_path / "a.wav", synthetic_library(1, seconds=2.0, seed=2)[0]).read_bytes()
    with catalog.session() as s:
        for clip_id in ("kept", "lost"):
            s.add(catalog.Clip(id=clip_id, title=clip_id, source_kind="file", shard=0, status=ClipStatus.ready))
    clip_audio.save("kept", wav, "a.wav")
    assert recover_clip("kept") == ClipStatus.pending
    kept = catalog.get_clip("kept")
    assert kept.status == ClipStatus.pending and kept.job_id is not None
    assert JobStore().get(kept.job_id).kind == "ingest"  # queued: embed -> index on its shard
    assert recover_clip("lost") == ClipStatus.failed
    failed = list_clips(status="failed").items
    assert [(c.clip_id, c.error.code if c.error else None) for c in failed] == [("lost", "index_damaged")]
    assert recover_clip("lost") is None and recover_clip("nobody") is None  # settled: nothing more to do


def test_a_search_process_never_imports_tensorflow(tmp_path: Path) -> None:
    """Building, saving, loading and searching a ScaNN snapshot leaves TensorFlow unimported, though it is installed."""
    script = f"""
import sys
from pathlib import Path
import numpy as np
from services.search.query import search_shard
from services.search.shard import ShardIndex
rng = np.random.default_rng(2)
vectors = rng.standard_normal((3000, 32)).astype(np.float32)
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
index = ShardIndex(Path({str(tmp_path)!r}), 0)
none = {{"hashes": np.zeros(0, np.uint32), "times": np.zeros(0, np.int32)}}
for i in range(100):
    index.write_segment(f"clip{{i}}", {{"vectors": vectors[30 * i : 30 * (i + 1)], **none}}, {SPACE!r})
index.compact()
reloaded = ShardIndex(Path({str(tmp_path)!r}), 0)
assert reloaded.version == 1
found = search_shard(reloaded, {SPACE!r}, {{"vectors": vectors[35:40], **none}}, limit=3)
assert found and found[0].clip_id == "clip1", found
print("tensorflow" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr[-2000:]


def test_a_process_forked_after_the_load_searches_then_moves_to_a_new_snapshot(tmp_path: Path) -> None:
    """The search worker loads its shards before its pool forks (services/search/worker.py). A forked process
    searches the snapshot it inherited, then compacts and lets it go: ScaNN's querying thread, which a fork does
    not copy, once made that last step wait forever."""
    script = f"""
import os
from pathlib import Path
import numpy as np
from services.search.query import search_shard
from services.search.shard import ShardIndex
rng = np.random.default_rng(3)
vectors = rng.standard_normal((3000, 32)).astype(np.float32)
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
none = {{"hashes": np.zeros(0, np.uint32), "times": np.zeros(0, np.int32)}}
index = ShardIndex(Path({str(tmp_path)!r}), 0)
for i in range(90):
    index.write_segment(f"clip{{i}}", {{"vectors": vectors[30 * i : 30 * (i + 1)], **none}}, {SPACE!r})
index.compact()
child = os.fork()
if child == 0:
    found = search_shard(index, {SPACE!r}, {{"vectors": vectors[35:40], **none}}, limit=3)
    assert found and found[0].clip_id == "clip1", found
    for i in range(90, 100):
        index.write_segment(f"clip{{i}}", {{"vectors": vectors[30 * i : 30 * (i + 1)], **none}}, {SPACE!r})
    index.compact()  # adopts version 2: the inherited searcher is freed
    found = search_shard(index, {SPACE!r}, {{"vectors": vectors[2975:2980], **none}}, limit=3)
    os._exit(0 if index.version == 2 and found[0].clip_id == "clip99" else 3)
_, status = os.waitpid(child, 0)
print(os.waitstatus_to_exitcode(status))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "0", out.stderr[-2000:]


def test_a_pool_process_sorts_its_shards_postings_before_its_first_task(env: Path, monkeypatch) -> None:
    """After a load every posting sits in the unsorted tail; the preload merges it, not the first query."""
    from services.search import tasks, worker

    index = ShardIndex(env, 0)
    rng = np.random.default_rng(4)
    for i in range(5):
        index.write_segment(f"clip{i}", random_clip(rng), SPACE)
    monkeypatch.setattr(tasks, "_indexes", {})
    monkeypatch.setattr(tasks, "_generations", {})
    monkeypatch.setattr(worker, "PRELOAD_SHARDS", [0])
    worker._preload()
    loaded = tasks._indexes[0]
    assert loaded.rows == 5 * 12
    assert not loaded.landmarks._tail and not loaded.classes._tail


def test_a_replica_takes_in_another_replicas_new_clips_without_reading_the_folder(env: Path, monkeypatch) -> None:
    """A bulk load writes clip after clip from whichever replica takes the task: the others take in just the
    segments written since their last look (a folder scan per write made it quadratic); a step that names no
    clip (a compaction) and a replica too far behind read the folders again; a delete and a re-index name theirs."""
    from services.search import tasks

    shard = 7  # a shard no stack of the suite has: its Redis keys are this test's own
    redis = tasks.get_redis()
    redis.delete(tasks._generation_key(shard), tasks._written_key(shard))
    monkeypatch.setattr(tasks, "_indexes", {})
    monkeypatch.setattr(tasks, "_generations", {})
    rng = np.random.default_rng(9)
    mine = tasks.get_index(shard)  # this process's copy
    other = ShardIndex(env, shard)  # another replica's

    def step_by_the_other(step: str) -> None:
        keys = [tasks._generation_key(shard), tasks._written_key(shard)]
        redis.eval(tasks._BUMP, 2, *keys, step, tasks.WRITTEN_WINDOW)

    def written_by_the_other(clip_id: str) -> None:
        other.write_segment(clip_id, random_clip(rng), SPACE)
        step_by_the_other(clip_id)

    scans: list[int] = []
    real_refresh = ShardIndex.refresh
    monkeypatch.setattr(ShardIndex, "refresh", lambda self: (scans.append(1), real_refresh(self))[1])
    for i in range(3):
        written_by_the_other(f"clip{i}")
    assert tasks.get_index(shard) is mine and mine.rows == 3 * 12 and not scans
    written_by_the_other("clip3")
    tasks._bump(shard)  # a step that names no clip
    assert tasks.get_index(shard).rows == 4 * 12 and len(scans) == 1
    monkeypatch.setattr(tasks, "WRITTEN_WINDOW", 2)
    for i in range(4, 7):
        written_by_the_other(f"clip{i}")
    assert tasks.get_index(shard).rows == 7 * 12 and len(scans) == 2  # three behind, two remembered
    # Each step forgets the one WRITTEN_WINDOW before it: the hash stays that size however long the load.
    assert int(redis.get(tasks._generation_key(shard))) == 8
    assert not redis.hexists(tasks._written_key(shard), "6") and redis.hexists(tasks._written_key(shard), "8")
    # A delete and a re-index's class scores name their clip too: taken in without a scan, as a scan would.
    other.write_tombstone("clip5")
    step_by_the_other(tasks.TOMBSTONE + "clip5")
    assert mine.view().scored_clips() == 0  # random clips carry no class scores
    classes = {
        "class_ids": rng.integers(0, 521, size=(12, 10)).astype(np.uint16),
        "class_levels": rng.integers(1, 256, size=(12, 10)).astype(np.uint8),
    }
    assert other.write_class_scores("clip6", classes)
    step_by_the_other(tasks.CLASSES + "clip6")
    assert tasks.get_index(shard) is mine and len(scans) == 2
    for index in (mine, ShardIndex(env, shard)):  # what this replica took in, and what a scan finds
        assert "clip5" in index.deleted and index.view().live_clips() == 6 and index.view().scored_clips() == 1


def test_a_pool_process_started_while_redis_is_down_waits_for_it_then_preloads(monkeypatch) -> None:
    """Restarted during a Redis outage, a search process must not give up its preload: it would never mark its
    shards warm, and /readyz would say 503 for as long as it lives."""
    import redis

    from services.search import tasks, worker

    calls: list[int] = []
    marked: list[list[int]] = []

    class Loaded:
        def view(self) -> None:
            pass

    def get_index(shard: int) -> Loaded:
        calls.append(shard)
        if len(calls) < 3:
            raise redis.ConnectionError("Connection refused")
        return Loaded()

    monkeypatch.setattr(tasks, "get_index", get_index)
    monkeypatch.setattr(worker.warm_shards, "keep_marked", marked.append)
    monkeypatch.setattr(worker, "PRELOAD_SHARDS", [0])
    worker._preload()
    assert calls == [0, 0, 0] and marked == [[0]]


def test_a_start_hashes_only_the_snapshot_files_written_since_they_were_last_hashed(library, monkeypatch) -> None:
    """The compactor stamps each file's sha256 with its stat: a restart reads none of them; a file written again
    (here: the same bytes) is hashed again, and a changed one is still found damaged (the tests above)."""
    root, _ = library
    ShardIndex(root, 0).compact()
    snapshot = root / "shards" / "0" / "snapshots" / "v1"
    assert (snapshot / shard_module.STAMPS).exists()
    hashed: list[str] = []
    real = shard_module.file_digest
    monkeypatch.setattr(shard_module, "file_digest", lambda p: (hashed.append(p.name), real(p))[1])
    assert ShardIndex(root, 0).version == 1 and hashed == []
    codes = snapshot / "codes.npy"
    codes.write_bytes(codes.read_bytes())
    assert ShardIndex(root, 0).version == 1 and hashed == ["codes.npy"]
    assert ShardIndex(root, 0).version == 1 and hashed == ["codes.npy"]  # stamped again by that start


def _settle(folder: Path, seconds_ago: float = 10.0) -> int:
    """Date the folder's mtime back, as if nothing had been written to it for a while; its new mtime (ns)."""
    then = os.stat(folder).st_mtime_ns - int(seconds_ago * 1e9)
    os.utime(folder, ns=(then, then))
    return then


def test_a_start_lists_no_segment_names_while_the_folder_is_as_the_compaction_listed_it(library, monkeypatch) -> None:
    """The compaction keeps the segments folder's mtime in its manifest: a start from that snapshot reads none of
    the folder's names until something is written there (a segment, or one taken away); a folder written to within
    SETTLED_S of the listing is not trusted (a file added in the same clock tick would leave its mtime as it was)."""
    root, clips = library
    index = ShardIndex(root, 0)
    index.compact()
    # Written just now, so not settled: the manifest says nothing and the next start lists.
    assert json.loads((index.snapshots / "v1" / "manifest.json").read_text())["segments_mtime_ns"] is None
    listings: list[int] = []
    real = ShardIndex._new_segments
    monkeypatch.setattr(ShardIndex, "_new_segments", lambda self, newest: (listings.append(1), real(self, newest))[1])
    assert ShardIndex(root, 0).delta_rows == 0 and len(listings) == 1

    settled = _settle(index.segments)
    assert index.compact() == 2
    assert json.loads((index.snapshots / "v2" / "manifest.json").read_text())["segments_mtime_ns"] == settled
    listings.clear()
    restarted = ShardIndex(root, 0)
    restarted.refresh()
    assert listings == [] and restarted.version == 2 and restarted.rows == 40 * 12

    index.write_tombstone("clip000")
    assert index.compact() == 3  # listed the settled folder, then its purge took clip000's segment away
    assert json.loads((index.snapshots / "v3" / "manifest.json").read_text())["segments_mtime_ns"] == settled
    _settle(index.segments, seconds_ago=5.0)
    assert ShardIndex(root, 0).rows == 39 * 12 and listings == [1]

    late = random_clip(np.random.default_rng(9))
    index.write_segment("late", late, SPACE)  # the folder's mtime moves on: the next look lists
    _settle(index.segments, seconds_ago=2.0)
    again = ShardIndex(root, 0)
    assert listings == [1, 1] and again.delta_rows == 12
    assert top(again, excerpt(late, 5))[0] == "late"
    assert top(again, excerpt(clips["clip020"], 1))[0] == "clip020"


def low_rank_clip(rng: np.random.Generator, basis: np.ndarray, frames: int = 12) -> dict[str, np.ndarray]:
    """A clip of unit frames near a subspace (``basis``' rows), as YAMNet's lie near a few hundred of 1024 axes."""
    arrays = random_clip(rng, frames, basis.shape[1])
    vectors = rng.standard_normal((frames, basis.shape[0])) @ basis + 0.05 * arrays["vectors"]
    arrays["vectors"] = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    return arrays


def test_a_shard_keeps_its_frames_projected_on_its_principal_axes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """A compaction fits the library's principal axes and keeps every frame as its projection plus the norm of the
    rest: scores keep their scale (unit frames stay unit), a query is projected by each shard, and clips laid out
    later are projected too. The axes are fitted again once the shard has doubled, and with no axes set the
    frames go back to their own dimension, from their segments."""
    monkeypatch.setenv("ECHOVIDS_SEARCH_PROJECTION_AXES", "8")
    get_settings.cache_clear()
    request.addfinalizer(get_settings.cache_clear)
    rng = np.random.default_rng(5)
    basis = np.linalg.qr(rng.standard_normal((64, 8)))[0].T
    clips = {f"clip{i:03d}": low_rank_clip(rng, basis) for i in range(30)}
    index = ShardIndex(tmp_path, 0)
    for clip_id, arrays in clips.items():
        index.write_segment(clip_id, arrays, SPACE)
    index.refresh()
    before = {cid: top(index, excerpt(arrays, 4)) for cid, arrays in list(clips.items())[:10]}
    assert all(found[0] == cid for cid, found in before.items())
    index.compact()
    snapshot = index.snapshots / "v1"
    assert np.load(snapshot / "codes.npy").shape == (30 * 12, 9)
    assert np.load(snapshot / "projection_axes.npy").shape == (64, 8)
    view = index.view()
    assert view.projection is not None and view.centre.shape == (9,)
    # The same clips at the same moments; a frame's score against itself is still ~1 (the rest's norm is kept).
    assert {cid: top(index, excerpt(arrays, 4)) for cid, arrays in list(clips.items())[:10]} == before
    own = view.project(clips["clip003"]["vectors"][:1])
    assert abs(float(np.linalg.norm(own)) - 1) < 1e-3
    rows, sims = view.search(own, 1)
    assert view.clip_ids[view.row_clip[rows[0, 0]]] == "clip003" and sims[0, 0] > 0.98

    # A clip laid out later is searched in the same space, here and in a restarted process.
    late = low_rank_clip(rng, basis)
    index.write_segment("late", late, SPACE)
    index.add_segment("late")
    for shard in (index, ShardIndex(tmp_path, 0)):
        assert shard.view().clip_data[shard.clip_pos["late"]].vectors.shape == (12, 9)
        assert top(shard, excerpt(late, 3))[0] == "late"
    fitted = json.loads((snapshot / "manifest.json").read_text())["projection_rows"]
    assert fitted == 30 * 12  # every row, under PROJECTION_SAMPLE_ROWS
    index.compact()  # 372 rows: the axes fitted on 360 still fit, the codes are taken as they are
    assert json.loads((index.snapshots / "v2" / "manifest.json").read_text())["projection_rows"] == fitted
    for i in range(30):
        index.write_segment(f"more{i:03d}", low_rank_clip(rng, basis), SPACE)
    index.refresh()
    index.compact()  # doubled: fitted again on every row
    assert json.loads((index.snapshots / "v3" / "manifest.json").read_text())["projection_rows"] == 61 * 12
    assert top(index, excerpt(clips["clip007"], 2))[0] == "clip007"

    # No axes: the frames go back to their own dimension, read again from the segments.
    index.write_segment("last", low_rank_clip(rng, basis), SPACE)
    index.add_segment("last")
    monkeypatch.setenv("ECHOVIDS_SEARCH_PROJECTION_AXES", "0")
    get_settings.cache_clear()
    index.compact()
    assert np.load(index.snapshots / "v4" / "codes.npy").shape == (62 * 12, 64)
    assert not (index.snapshots / "v4" / "projection_axes.npy").exists()
    late2 = low_rank_clip(rng, basis)
    index.write_segment("late2", late2, SPACE)
    index.add_segment("late2")
    assert index.view().projection is None and top(index, excerpt(late2, 3))[0] == "late2"
    assert top(index, excerpt(clips["clip007"], 4)) == before["clip007"]


def test_packed_postings_give_back_each_postings_clip_and_time() -> None:
    """Clip and time in one uint32 (the clip in the high bits); when they need more than 32 bits, no packing."""
    from services.search.landmark_index import PackedPostings

    rng = np.random.default_rng(2)
    clips = rng.choice([0, 1, 3, 4, 6], size=5000).astype(np.int32)  # clips 2 and 5 have none
    times = rng.integers(0, 40_000, size=5000).astype(np.int32)
    hashes = np.sort(rng.integers(0, 2**32, size=5000, dtype=np.uint32))
    packed = PackedPostings.pack(hashes, clips, times, count=7)
    assert packed is not None and packed.hops.dtype == np.uint32 and int(packed.shift[0]) == 16
    back_clips, back_times = packed.at(slice(None))
    np.testing.assert_array_equal(back_clips, clips)
    np.testing.assert_array_equal(back_times, times)
    rows = rng.integers(0, 5000, size=100)
    np.testing.assert_array_equal(packed.at(rows)[0], clips[rows])
    assert PackedPostings.pack(hashes, clips, times, count=2**16 + 1) is None  # 17 + 16 bits


def test_a_hash_directory_finds_the_same_rows_as_a_search_of_every_postings_hash() -> None:
    from services.search.landmark_index import HashDirectory, SortedPostings

    rng = np.random.default_rng(5)
    hashes = np.sort(rng.integers(10, 200, size=3000, dtype=np.uint32))
    everyone = SortedPostings(hashes, np.zeros(hashes.size, np.int32), np.zeros(hashes.size, np.int32))
    directory = HashDirectory.of(hashes)
    assert directory.keys.size == np.unique(hashes).size and directory.starts.dtype == np.uint32
    np.testing.assert_array_equal(directory.posting_hashes(), hashes)
    asked = np.array([0, 9, 10, 57, 57, 150, 199, 200, 2**32 - 1, *rng.integers(0, 256, 200)], dtype=np.uint32)
    for got, want in zip(directory.bounds(asked), everyone.bounds(asked), strict=True):
        np.testing.assert_array_equal(got, want)
    empty = HashDirectory.of(np.empty(0, np.uint32))
    lo, hi = empty.bounds(asked)
    assert empty.posting_hashes().size == 0 and not lo.any() and not hi.any()


def _rewrite_postings(snapshot: Path, columns: dict[str, np.ndarray]) -> None:
    """A snapshot's landmark arrays replaced by ``columns`` (as an older snapshot kept them), its manifest to match."""
    manifest = json.loads((snapshot / "manifest.json").read_text())
    for path in snapshot.glob("landmark_*.npy"):
        path.unlink()
        del manifest["arrays"][path.stem]
    for name, column in columns.items():
        np.save(snapshot / f"landmark_{name}.npy", column)
        manifest["arrays"][f"landmark_{name}"] = shard_module.file_digest(snapshot / f"landmark_{name}.npy")
    (snapshot / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("form", ["apart", "packed without a directory"])
def test_a_snapshot_of_an_older_postings_form_is_searched_alike_and_compacted_to_the_directory(library, form) -> None:
    from services.search.landmark_index import PackedPostings, SortedPostings

    root, clips = library
    ShardIndex(root, 0).compact()
    snapshot = root / "shards" / "0" / "snapshots" / "v1"
    queries = {cid: excerpt(arrays, 4) for cid, arrays in list(clips.items())[:8]}
    expected = {cid: top(ShardIndex(root, 0), q) for cid, q in queries.items()}
    assert all(found[0] == cid and found[2] == "exact" for cid, found in expected.items())
    packed = PackedPostings(*(np.load(snapshot / f"landmark_{name}.npy") for name in PackedPostings._fields))
    assert packed.keys.size < packed.size  # the directory is smaller than the postings it indexes
    hashes = packed.posting_hashes()
    assert np.all(np.diff(hashes.astype(np.int64)) >= 0) and hashes.size == packed.size
    if form == "apart":
        clip, time = packed.at(slice(None))
        _rewrite_postings(snapshot, {"hashes": hashes, "clips": clip, "times": time})
    else:
        _rewrite_postings(snapshot, {"hashes": hashes, "hops": packed.hops, "shift": packed.shift})
    legacy = ShardIndex(root, 0)
    kind = SortedPostings if form == "apart" else PackedPostings
    assert legacy.version == 1 and isinstance(legacy.view().postings[0], kind)
    assert {cid: top(legacy, q) for cid, q in queries.items()} == expected
    legacy.compact()  # and a compaction writes the directory
    assert (root / "shards" / "0" / "snapshots" / "v2" / "landmark_keys.npy").exists()
    assert not (root / "shards" / "0" / "snapshots" / "v2" / "landmark_hashes.npy").exists()
    assert {cid: top(ShardIndex(root, 0), q) for cid, q in queries.items()} == expected
