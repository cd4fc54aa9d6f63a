"""The shard's class index: postings, a text's class mixture scored per frame, and the shard's text search with
its filters, deletes, compaction, restarts and re-indexed clips."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from echovids import class_scores
from echovids.errors import TextSearchUnavailable
from echovids.schemas import SearchFilters
from services.search.class_index import ClassPostings, row_scores
from services.search.query import search_text_shard
from services.search.shard import ShardIndex

SPACE = "test:1:8"
CLASSES = 40
NAMES = np.array([f"class{i}" for i in range(CLASSES)])


def clip_with(rng: np.random.Generator, frames: int, loud: dict[int, list[int]]) -> dict[str, np.ndarray]:
    """A clip whose frames hear faint noise over every class, and class c at 0.9 in the frames ``loud[c]``."""
    scores = rng.uniform(0.0, 0.05, size=(frames, CLASSES)).astype(np.float32)
    for cls, at in loud.items():
        scores[at, cls] = 0.9
    compact = class_scores.encode(scores, top=5)
    best = np.argsort(-scores, axis=1)[:, :3]
    vectors = rng.standard_normal((frames, 8)).astype(np.float32)
    return {
        "vectors": vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
        "hashes": rng.integers(0, 2**22, size=frames * 10).astype(np.uint32),
        "times": np.sort(rng.integers(0, frames * 30, size=frames * 10)).astype(np.int32),
        "frame_labels": best.astype(np.int16),
        "label_names": NAMES,
        "class_ids": compact.ids,
        "class_levels": compact.levels,
    }


def text(*classes: int) -> dict[str, np.ndarray]:
    weights = np.full(len(classes), 1.0 / len(classes), dtype=np.float32)
    return {"class_ids": np.array(classes, dtype=np.uint16), "class_weights": weights}


@pytest.fixture
def library(tmp_path: Path) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    clips = {f"clip{i:02d}": clip_with(rng, 20, {i % CLASSES: [5 + i % 10, 6 + i % 10]}) for i in range(30)}
    index = ShardIndex(tmp_path, 0)
    for clip_id, arrays in clips.items():
        index.write_segment(clip_id, arrays, SPACE)
    return clips


def test_postings_score_every_row_like_the_dense_scores() -> None:
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, size=(50, CLASSES)).astype(np.float32)
    compact = class_scores.encode(scores, top=6)
    postings = ClassPostings()
    postings.add(0, compact.ids[:20], compact.levels[:20])
    postings.add(20, compact.ids[20:], compact.levels[20:])  # a second clip, merged from the tail
    assert len(postings) == np.count_nonzero(compact.levels)
    weights = np.zeros(CLASSES, dtype=np.float32)
    weights[[3, 7, 11]] = [0.5, 0.3, 0.2]
    got = row_scores(postings.sorted_view(), np.array([3, 7, 11]), weights[[3, 7, 11]], 50)
    np.testing.assert_allclose(got, class_scores.frame_scores(compact, weights), rtol=1e-5, atol=1e-7)
    assert row_scores(postings.sorted_view(), np.array([39]), np.array([1.0]), 50).shape == (50,)


def test_text_search_finds_the_clip_and_the_moment(tmp_path: Path, library) -> None:
    index = ShardIndex(tmp_path, 0)
    found = search_text_shard(index, text(7), limit=5)
    # Classes 7 is loud in clip07 at frames 12-13 (0.48 s hops): its best two-frame stretch starts at 12.
    assert found[0].clip_id == "clip07"
    assert found[0].match_start_s == pytest.approx(12 * 0.48)
    assert "class7" in found[0].labels
    assert found[0].score == pytest.approx(0.9, abs=0.06)
    assert len(found) == 5 and all(a.score >= b.score for a, b in itertools.pairwise(found))


def test_labels_filter_keeps_limit_results_that_hold_a_label_at_their_moment(tmp_path: Path, library) -> None:
    index = ShardIndex(tmp_path, 0)
    wanted = {"class1", "class2", "class3", "class4"}
    found = search_text_shard(index, text(7), limit=3, filters=SearchFilters(labels=sorted(wanted)))
    assert len(found) == 3
    assert all(wanted & set(c.labels) for c in found)
    allowed = search_text_shard(index, text(7), limit=10, allowed_ids={"clip03", "clip07"})
    assert {c.clip_id for c in allowed} == {"clip03", "clip07"}


def test_deleted_clip_leaves_the_class_index_at_once_and_compaction_purges_it(tmp_path: Path, library) -> None:
    index = ShardIndex(tmp_path, 0)
    index.write_tombstone("clip07")
    index.refresh()
    assert "clip07" not in {c.clip_id for c in search_text_shard(index, text(7), limit=40)}
    index.compact()
    assert not (index.segments / "clip07.npz").exists()
    again = ShardIndex(tmp_path, 0)  # a restart on the snapshot: the postings follow the new row layout
    found = search_text_shard(again, text(8), limit=3)
    assert found[0].clip_id == "clip08" and found[0].match_start_s == pytest.approx(13 * 0.48)
    assert "clip07" not in {c.clip_id for c in search_text_shard(again, text(7), limit=40)}


def test_a_clip_indexed_without_class_scores_gets_them_by_a_class_segment(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    arrays = clip_with(rng, 20, {9: [3, 4]})
    old = {name: arrays[name] for name in ("vectors", "hashes", "times", "frame_labels", "label_names")}
    index = ShardIndex(tmp_path, 0)
    index.write_segment("old", old, SPACE)
    index.add_segment("old")
    replica = ShardIndex(tmp_path, 0)
    with pytest.raises(TextSearchUnavailable):
        search_text_shard(index, text(9), limit=5)
    assert not index.has_class_scores("old")
    assert index.write_class_scores("old", arrays)
    assert not index.write_class_scores("old", arrays)  # idempotent: written once
    found = search_text_shard(index, text(9), limit=5)
    assert found[0].clip_id == "old" and found[0].match_start_s == pytest.approx(3 * 0.48)
    replica.refresh()  # another process takes it in on its next refresh
    assert search_text_shard(replica, text(9), limit=5)[0].clip_id == "old"
    assert search_text_shard(ShardIndex(tmp_path, 0), text(9), limit=5)[0].clip_id == "old"


@pytest.mark.parametrize("damage", ["random bytes", "rewritten"])
def test_a_damaged_class_segment_is_set_aside_and_written_again(tmp_path: Path, damage: str) -> None:
    """Random bytes (the zip's CRC sees them) or a member rewritten whole (only the checksum does): the shard loads
    without the clip's class scores instead of failing, and the next re-index writes them again."""
    rng = np.random.default_rng(6)
    arrays = clip_with(rng, 20, {9: [3, 4]})
    old = {name: arrays[name] for name in ("vectors", "hashes", "times", "frame_labels", "label_names")}
    index = ShardIndex(tmp_path, 0)
    index.write_segment("old", old, SPACE)
    assert index.write_class_scores("old", arrays)
    path = index.class_segments / "old.npz"
    if damage == "random bytes":
        data = bytearray(path.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        path.write_bytes(bytes(data))
    else:
        with np.load(path) as stored:
            columns = {name: stored[name] for name in stored.files}
        columns["class_levels"] = columns["class_levels"][::-1].copy()
        np.savez(path, **columns)
    restarted = ShardIndex(tmp_path, 0)
    assert restarted.clip_ids == ["old"] and not path.exists()
    assert any(p.name.startswith("classes-old.npz") for p in restarted.quarantine.iterdir())
    with pytest.raises(TextSearchUnavailable):
        search_text_shard(restarted, text(9), limit=5)
    assert restarted.write_class_scores("old", arrays)
    assert search_text_shard(restarted, text(9), limit=5)[0].clip_id == "old"


def test_audio_search_filters_inside_the_neighbour_search(tmp_path: Path, library) -> None:
    from services.search.query import search_shard

    index = ShardIndex(tmp_path, 0)
    query = {
        "vectors": library["clip05"]["vectors"][4:9],
        "hashes": np.zeros(0, np.uint32),
        "times": np.zeros(0, np.int32),
    }
    assert search_shard(index, SPACE, query, limit=5, k=5)[0].clip_id == "clip05"
    allowed = {f"clip{i:02d}" for i in range(10, 30)}
    found = search_shard(index, SPACE, query, limit=5, k=5, filters=SearchFilters(source="file"), allowed_ids=allowed)
    assert len(found) == 5 and {c.clip_id for c in found} <= allowed
