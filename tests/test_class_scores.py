"""Frames' class scores in compact form, and clips ranked by a class mixture (echovids/class_scores.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from echovids import class_scores


def _scores(frames: int, classes: int = 521, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Sigmoid-like: most classes near zero, a few high, as YAMNet's are.
    return (rng.random((frames, classes)) ** 12).astype(np.float32)


def test_encode_keeps_each_frames_top_classes_highest_first_in_30_bytes() -> None:
    scores = _scores(50)
    compact = class_scores.encode(scores)
    assert compact.ids.dtype == np.uint16 and compact.levels.dtype == np.uint8
    assert compact.ids.shape == compact.levels.shape == (50, class_scores.TOP_CLASSES)
    assert compact.nbytes / len(compact) == 30
    for f in range(50):
        expected = set(np.argsort(-scores[f])[: class_scores.TOP_CLASSES])
        assert set(compact.ids[f].tolist()) == expected
        assert (np.diff(compact.levels[f].astype(int)) <= 0).all()


def test_decode_gives_back_the_kept_scores_within_half_a_level() -> None:
    scores = _scores(40, seed=1)
    compact = class_scores.encode(scores, top=8)
    dense = class_scores.decode(compact, scores.shape[1])
    rows = np.arange(40)[:, None]
    kept = compact.ids.astype(int)
    assert np.abs(dense[rows, kept] - scores[rows, kept]).max() <= 0.5 / class_scores.SCORE_SCALE + 1e-7
    mask = np.ones_like(dense, dtype=bool)
    mask[rows, kept] = False
    assert (dense[mask] == 0).all()


def test_encode_clips_out_of_range_scores_and_accepts_no_frames() -> None:
    compact = class_scores.encode(np.array([[1.5, -0.2, 0.5]], dtype=np.float32), top=3)
    assert compact.ids.tolist() == [[0, 2, 1]]
    assert compact.levels.tolist() == [[255, 128, 0]]
    empty = class_scores.encode(np.zeros((0, 521), np.float32))
    assert len(empty) == 0 and class_scores.frame_scores(empty, np.ones(521)).shape == (0,)
    with pytest.raises(ValueError):
        class_scores.encode(np.zeros(521, np.float32))


def test_frame_scores_are_the_weighted_sum_of_the_decoded_scores() -> None:
    scores = _scores(30, seed=2)
    compact = class_scores.encode(scores)
    weights = np.zeros(521, np.float32)
    weights[[3, 70, 400]] = [0.5, 0.3, 0.2]
    expected = class_scores.decode(compact, 521) @ weights
    np.testing.assert_allclose(class_scores.frame_scores(compact, weights), expected, rtol=1e-5, atol=1e-7)


def test_best_stretch_finds_each_clips_best_window_and_its_start() -> None:
    # Three clips of 5, 2 and 4 frames; stretch 3.
    scores = np.array([0.1, 0.9, 0.8, 0.7, 0.0, 0.4, 0.6, 0.0, 0.0, 0.3, 0.9])
    offsets = np.array([0, 5, 7, 11])
    clip_score, start = class_scores.best_stretches(scores, offsets, stretch=3)
    np.testing.assert_allclose(clip_score, [0.8, 0.5, 0.4])
    assert start.tolist() == [1, 0, 1]


def test_best_stretch_of_one_frame_is_the_clips_peak_and_windows_never_cross_clips() -> None:
    scores = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    offsets = np.array([0, 3, 6])
    peak, start = class_scores.best_stretches(scores, offsets, stretch=1)
    assert peak.tolist() == [1.0, 1.0] and start.tolist() == [2, 0]
    # A window of 2 across the boundary (frames 2 and 3) would score 1.0; neither clip may have it.
    pair, start = class_scores.best_stretches(scores, offsets, stretch=2)
    np.testing.assert_allclose(pair, [0.5, 0.5])
    assert start.tolist() == [1, 0]


def test_best_stretch_ties_go_to_the_earliest_start_and_an_empty_clip_scores_minus_infinity() -> None:
    scores = np.array([0.5, 0.5, 0.5, 0.5])
    clip_score, start = class_scores.best_stretches(scores, np.array([0, 4, 4]), stretch=2)
    assert clip_score[0] == 0.5 and start[0] == 0
    assert clip_score[1] == -np.inf
    with pytest.raises(ValueError):
        class_scores.best_stretches(scores, np.array([0, 4]), stretch=0)


def test_rank_orders_best_first_with_the_lower_index_on_ties() -> None:
    assert class_scores.rank(np.array([0.2, 0.9, 0.5, 0.9, -np.inf]), 3).tolist() == [1, 3, 2]
    assert class_scores.rank(np.array([0.1]), 5).tolist() == [0]
    assert class_scores.rank(np.array([0.1, 0.2]), 0).tolist() == []
    ties = np.full(200, 0.5)  # ties at the k-th place: the lowest indices, not any of them
    ties[7] = 0.9
    assert class_scores.rank(ties, 3).tolist() == [7, 0, 1]


def test_a_mixture_finds_the_clip_and_the_moment_that_carry_its_classes() -> None:
    """End to end on synthetic scores: class 7 sounds in clip 2 from frame 6 on; the mixture asks for it."""
    rng = np.random.default_rng(3)
    lengths = [10, 12, 15, 9]
    scores = (rng.random((sum(lengths), 521)) * 0.05).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    scores[offsets[2] + 6 : offsets[2] + 9, 7] = 0.9
    scores[offsets[0] + 3, 7] = 0.95  # one stray frame elsewhere: a stretch of 3 must not prefer it
    weights = np.zeros(521, np.float32)
    weights[7] = 0.8
    weights[8] = 0.2
    compact = class_scores.encode(scores)
    clip_score, start = class_scores.best_stretches(class_scores.frame_scores(compact, weights), offsets, stretch=3)
    assert class_scores.rank(clip_score, 1).tolist() == [2]
    assert start[2] == 6


def brute_best_stretches(scores: np.ndarray, offsets: np.ndarray, stretch: int) -> tuple[list[float], list[int]]:
    """The definition, window by window: each clip's best mean of ``stretch`` frames (all, if shorter), earliest."""
    best, starts = [], []
    for lo, hi in itertools.pairwise(offsets):
        span = min(stretch, hi - lo)
        windows = [float(np.mean(scores[s : s + span])) for s in range(lo, hi - span + 1)] if span else []
        best.append(max(windows) if windows else -np.inf)
        top = best[-1]
        starts.append(next((i for i, w in enumerate(windows) if w >= top - 1e-12), 0))
    return best, starts


def test_best_stretch_agrees_with_the_definition_on_random_sparse_clips() -> None:
    """Clips of 0-6 frames, most frames silent, ties made likely by rounding; stretches 1-3."""
    rng = np.random.default_rng(11)
    for _ in range(300):
        lengths = rng.integers(0, 7, size=rng.integers(1, 12))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        scores = np.round(rng.random(offsets[-1]), 1) * (rng.random(offsets[-1]) < 0.3)
        stretch = int(rng.integers(1, 4))
        clip_score, start = class_scores.best_stretches(scores, offsets, stretch)
        expected, expected_start = brute_best_stretches(scores, offsets, stretch)
        np.testing.assert_allclose(clip_score, expected)
        assert start.tolist() == expected_start


def test_best_stretch_refuses_negative_scores() -> None:
    with pytest.raises(ValueError):
        class_scores.best_stretches(np.array([0.2, -0.1]), np.array([0, 2]), stretch=1)


def test_top_stretches_are_the_full_ranking_s_head() -> None:
    """Pruned by each clip's best frame, the top k are still exactly best_stretches then rank: same clips, order,
    scores and starts, ties and excluded clips included."""
    rng = np.random.default_rng(5)
    for _ in range(300):
        lengths = rng.integers(0, 8, size=rng.integers(1, 40))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        scores = np.round(rng.random(offsets[-1]) ** 3, 1) * (rng.random(offsets[-1]) < 0.3)
        stretch, k = int(rng.integers(1, 4)), int(rng.integers(1, 12))
        allowed = rng.random(lengths.size) < 0.8
        clip_score, start = class_scores.best_stretches(scores, offsets, stretch)
        clip_score[~allowed | (clip_score <= 0)] = -np.inf
        expected = class_scores.rank(clip_score, k)
        expected = expected[np.isfinite(clip_score[expected])]
        clips, top_score, top_start = class_scores.top_stretches(scores, offsets, stretch, k, allowed)
        assert clips.tolist() == expected.tolist()
        np.testing.assert_allclose(top_score, clip_score[expected])
        assert top_start.tolist() == start[expected].tolist()
