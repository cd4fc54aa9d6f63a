"""The eval instrument's own parts, without a running stack: recordings and their ground truth, degradations,
metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from echovids.audio import decode_bytes
from echovids.audio_params import FRAME_HOP_S, SAMPLE_RATE
from echovids.harness import wav_bytes
from evaluation import degrade, folds, metrics, references
from evaluation.dataset import DEFAULT_ESC10, Clip, fit, fold_of, join_recordings, load_clips
from evaluation.suites import (
    CONDITIONS,
    EvalConfig,
    clips_outside,
    judge_exact,
    make_query,
    miss_reason,
    recordings_library,
)
from services.search.shard import ShardIndex

SR = SAMPLE_RATE


def _clips(n: int, classes: int = 3) -> tuple[list[Clip], dict[str, np.ndarray]]:
    clips = [Clip(name=f"c{i:02d}", label=f"class{i % classes}", fold=2, path=Path(f"c{i:02d}.wav")) for i in range(n)]
    # Each clip a constant level = its index, so the joined audio shows which clip sits where.
    waves = {
        c.name: np.full(int(0.5 * SR) + (7 if i % 2 else -7), (i + 1) / 100, dtype=np.float32)
        for i, c in enumerate(clips)
    }
    return clips, waves


def test_recordings_ground_truth_matches_the_audio() -> None:
    clips, waves = _clips(10)
    recordings, left = join_recordings(clips, waves, clips_per_recording=4, clip_s=0.5, seed=3, prefix="r")
    assert [r.name for r in recordings] == ["r00", "r01"]
    assert len(left) == 2
    used = [s.clip for r in recordings for s in r.segments] + [c.name for c in left]
    assert sorted(used) == [c.name for c in clips]  # every clip once
    level = {c.name: (i + 1) / 100 for i, c in enumerate(clips)}
    label = {c.name: c.label for c in clips}
    for rec in recordings:
        assert rec.waveform.size == 4 * SR // 2 and rec.duration_s == 2.0
        for i, seg in enumerate(rec.segments):
            assert (seg.start_s, seg.end_s) == (i * 0.5, (i + 1) * 0.5)
            assert seg.label == label[seg.clip]
            inside = rec.waveform[int(seg.start_s * SR) + 1 : int(seg.end_s * SR) - 20]
            assert np.allclose(inside, level[seg.clip])  # padded clips end in silence, long ones were trimmed
        assert rec.labels_at(rec.segments[1].start_s + 0.1) == {rec.segments[1].label}
    # Same seed, same library; another seed, another order.
    again, _ = join_recordings(clips, None, clips_per_recording=4, clip_s=0.5, seed=3, prefix="r")
    other, _ = join_recordings(clips, None, clips_per_recording=4, clip_s=0.5, seed=4, prefix="r")
    assert [r.segments for r in again] == [r.segments for r in recordings]
    assert [r.segments for r in other] != [r.segments for r in recordings]


def test_the_same_sounds_pass_keeps_exactly_the_clips_the_recordings_are_made_of() -> None:
    clips = load_clips(DEFAULT_ESC10)
    recordings, left_over = recordings_library(EvalConfig(url="", out=Path()), clips, with_audio=False)
    outside = clips_outside(recordings, clips)
    assert {c.name for c in outside} == {c.name for c in clips if c.fold == 1} | {c.name for c in left_over}
    kept = {c.name for c in clips} - {c.name for c in outside}
    assert kept == {s.clip for r in recordings for s in r.segments} and len(kept) == 12 * len(recordings)


def test_fold_from_file_name_and_fit() -> None:
    assert fold_of("esc10_dog_bark_1-100032-A.ogg") == 1
    assert fold_of("4-191687-A.ogg") == 4
    assert fit(np.ones(10, dtype=np.float32), 5 / SR).tolist() == [1.0] * 5
    assert fit(np.ones(3, dtype=np.float32), 5 / SR).tolist() == [1, 1, 1, 0, 0]


@pytest.mark.parametrize("snr", [20.0, 10.0, 0.0, -5.0])
def test_noise_is_mixed_at_the_asked_snr(snr: float) -> None:
    rng = np.random.default_rng(1)
    t = np.arange(2 * SR) / SR
    signal = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    noise = rng.standard_normal(signal.size).astype(np.float32) * 5
    scaled = degrade.scale_noise(signal, noise, snr)
    assert degrade.snr_db(signal, scaled) == pytest.approx(snr, abs=1e-6)
    mix = degrade.mix_at_snr(signal, noise, snr)
    assert np.max(np.abs(mix)) <= degrade.PEAK + 1e-6
    gain = np.dot(mix, signal) / np.dot(signal, signal)  # one gain for signal and noise: the SNR survives
    assert degrade.snr_db(gain * signal, mix - gain * signal) == pytest.approx(snr, abs=0.1)
    with pytest.raises(ValueError):
        degrade.scale_noise(signal, np.zeros_like(signal), snr)


def _band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / SR)
    return float(spectrum[(freqs >= lo) & (freqs < hi)].sum())


def test_band_limit_removes_out_of_band_energy() -> None:
    x = np.random.default_rng(2).standard_normal(2 * SR).astype(np.float32) * 0.2
    y = degrade.band_limit(x)
    assert y.size == x.size
    out_before = _band_energy(x, 0, 150) + _band_energy(x, 5000, SR / 2)
    out_after = _band_energy(y, 0, 150) + _band_energy(y, 5000, SR / 2)
    assert out_after < 1e-3 * out_before  # more than 30 dB down
    in_ratio = _band_energy(y, 600, 3000) / _band_energy(x, 600, 3000)
    assert 0.8 < in_ratio < 1.2  # the pass band is kept
    # Zero phase: a click stays where it was.
    click = np.zeros(SR, dtype=np.float32)
    click[8000] = 1.0
    assert abs(int(np.argmax(np.abs(degrade.band_limit(click)))) - 8000) <= 2


def test_reverb_decays_and_keeps_length() -> None:
    rng = np.random.default_rng(3)
    ir = degrade.room_impulse_response(rng, rt60_s=0.4)
    assert ir[0] == 1.0
    assert np.sum(ir[1:] ** 2) == pytest.approx(1.0, rel=1e-6)  # direct-to-reverberant ratio 0 dB
    early, late = np.sum(ir[1:800] ** 2), np.sum(ir[int(0.3 * SR) : int(0.3 * SR) + 799] ** 2)
    assert 10 * np.log10(early / late) == pytest.approx(45, abs=6)  # -60 dB per 0.4 s: about -45 dB at 0.3 s
    x = rng.standard_normal(SR).astype(np.float32) * 0.1
    assert degrade.reverb(x, rng).size == x.size


def test_opus_roundtrip_keeps_the_length() -> None:
    t = np.arange(int(2.5 * SR)) / SR
    x = (0.3 * np.sin(2 * np.pi * 700 * t) * (t % 0.5 < 0.25)).astype(np.float32)
    data, y = degrade.opus_roundtrip(x, bitrate_kbps=32)
    assert data[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a webm file, as a browser sends
    assert abs(y.size - x.size) <= 0.05 * SR
    assert abs(decode_bytes(data).size - x.size) <= 0.05 * SR
    # The sound survives in place (no big shift): the bursts line up.
    n = min(x.size, y.size)
    assert np.corrcoef(np.abs(x[:n]) > 0.05, np.abs(y[:n]) > 0.05)[0, 1] > 0.9


def test_precision_and_average_precision() -> None:
    ranked = [True, False, True, False, False]
    assert metrics.precision_at_k(ranked, 1) == 1.0
    assert metrics.precision_at_k(ranked, 5) == 0.4
    assert metrics.precision_at_k(ranked, 10) == 0.2  # fewer results than k: the missing ones are misses
    assert metrics.average_precision(ranked, 2) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert metrics.average_precision(ranked, 4) == pytest.approx((1 / 1 + 2 / 3) / 4)  # two never retrieved
    assert metrics.average_precision([False, False], 3) == 0.0
    assert metrics.average_precision([True, True, True], 3) == 1.0


def test_timestamped_hit_and_offset_error() -> None:
    segments = [(0.0, 5.0, "dog"), (5.0, 10.0, "rain"), (10.0, 15.0, "dog")]
    assert metrics.timestamped_hit(segments, "rain", 7.0)
    assert metrics.timestamped_hit(segments, "rain", 4.6)  # within 0.5 s of the segment
    assert not metrics.timestamped_hit(segments, "rain", 4.4)
    assert metrics.timestamped_hit(segments, "dog", 12.0)
    assert not metrics.timestamped_hit(segments, "sea", 7.0)
    assert not metrics.timestamped_hit(segments, "rain", 15.6)
    # Query time 1.0 found at 31.0: the excerpt started at 30.0.
    assert metrics.offset_error(31.0, 1.0, 30.0) == 0.0
    assert metrics.offset_error(31.2, 1.0, 30.0) == pytest.approx(0.2)


def test_exact_queries_are_judged_by_recording_and_offset() -> None:
    clips, waves = _clips(8, classes=4)
    for i, c in enumerate(clips):  # give the clips some sound, so no excerpt is silence
        waves[c.name] = np.random.default_rng(i).standard_normal(SR // 2).astype(np.float32) * 0.1
    recordings, _ = join_recordings(clips, waves, clips_per_recording=4, clip_s=0.5, seed=0, prefix="r")
    rng = np.random.default_rng(5)
    noisy = next(c for c in CONDITIONS if c.kind == "recording-noise")
    query = make_query(noisy, rng, recordings, 0, 0.6)
    assert query["recording"] == "r00" and query["noise_recording"] == "r01"
    assert 0 <= query["offset_s"] <= 2.0 - 0.6
    assert decode_bytes(query["data"]).size == int(0.6 * SR)
    right = {"title": "r00", "match_start_s": query["offset_s"] + 0.3, "query_start_s": 0.3, "match": "exact"}
    wrong = {"title": "r01", "match_start_s": 1.0, "query_start_s": 0.0, "match": "similar"}
    hit = judge_exact(query, [right, wrong])
    assert hit["correct"] and hit["on_time"] and hit["error_s"] == 0 and hit["rank"] == 1
    assert miss_reason({**hit, "status": "done"}) is None
    miss = {**judge_exact(query, [wrong, right]), "status": "done"}
    assert not miss["correct"] and miss["rank"] == 2
    assert miss_reason(miss) == "the interfering recording won"
    late = {**judge_exact(query, [{**right, "match_start_s": query["offset_s"] + 1.0}]), "status": "done"}
    assert late["correct"] and not late["on_time"]
    assert miss_reason(late) == "right recording, offset off by > 0.5 s"
    assert wav_bytes(np.zeros(10, dtype=np.float32))[:4] == b"RIFF"


@pytest.mark.parametrize("sealed", [False, True])
def test_offline_client_finds_a_clip_at_its_moment_and_forgets_a_deleted_one(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sealed: bool
) -> None:
    """`echovids eval --offline` answers with the service's own code: the very recording, where, and no deleted clip;
    from the delta's float16 frames, and (sealed: a search process compacts past ECHOVIDS_SEARCH_DELTA_MAX rows) from a
    snapshot's int8 codes."""
    from echovids.harness import write_wav
    from echovids.settings import get_settings
    from evaluation.offline import OfflineClient
    from tests.sounds import synthetic_library

    monkeypatch.setenv("ECHOVIDS_SEARCH_DELTA_MAX", "0" if sealed else "4096")
    get_settings.cache_clear()
    sounds = synthetic_library(3)
    client = OfflineClient(tmp_path / "library")
    assert client.add([(write_wav(tmp_path / f"s{i}.wav", s), f"s{i}", []) for i, s in enumerate(sounds)]) == []
    assert client.index.version == (1 if sealed else 0) and client.index.delta_rows == (0 if sealed else 48)
    excerpt = wav_bytes(sounds[1][3 * SR : 6 * SR])
    answer = client.search(excerpt, "q.wav", 3)
    top = answer.results[0]
    assert answer.status == "done" and (top["title"], top["match"]) == ("s1", "exact")
    assert metrics.offset_error(top["match_start_s"], top["query_start_s"], 3.0) <= 0.05
    client.delete(client.library_items()["s1"]["clip_id"])
    assert "s1" not in client.library_items()
    assert "s1" not in [r["title"] for r in client.search(excerpt, "q.wav", 3).results]


def _reference_shard(tmp_path: Path, clips: dict[str, np.ndarray]) -> ShardIndex:
    index = ShardIndex(tmp_path, 0)
    for title, vectors in clips.items():
        arrays = {"vectors": vectors, "hashes": np.zeros(0, np.uint32), "times": np.zeros(0, np.int32)}
        index.write_segment(title, arrays, "test-space")
        index.add_segment(title)
    return index


def test_references_rank_by_the_clip_mean_and_by_the_frames_votes(tmp_path: Path) -> None:
    """The clip-mean reference ranks by the cosine of the means, however the frames are ordered; frame voting
    ranks by the frames that line up, and places the moment at the middle of the query there."""
    axes, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((16, 4)))
    a, b, c, d = axes.T.astype(np.float32)
    query = np.stack([a, b, a, b])  # mean: a + b
    index = _reference_shard(
        tmp_path,
        {
            "same-mean-shuffled": np.stack([b, b, a, a, d, d, d, d]),  # a query-long window holds a and b equally
            "half-the-sound": np.stack([a, a, c, c, c, c, c, c]),
            "other": np.stack([c, d, c, d, c, d, c, d]),
        },
    )
    view = index.view()
    means = references.clip_mean(view, query, 3)
    assert [r.title for r in means] == ["same-mean-shuffled", "half-the-sound", "other"]
    assert means[0].match_start_s == pytest.approx(2 * FRAME_HOP_S)  # the window of frames 0-3, its middle
    index2 = _reference_shard(
        tmp_path / "voting",
        {
            "aligned": np.stack([c, a, b, a, b, c]),
            "shuffled": np.stack([b, b, a, a, c, c]),
            "none": np.stack([-(a + b), -(a + b)]) / np.sqrt(2),
        },
    )
    voted = references.frame_voting(index2.view(), query, 3)
    assert voted[0].title == "aligned"
    assert voted[0].match_start_s == pytest.approx((1 + 2) * FRAME_HOP_S)  # offset 1, the query's middle frame 2
    assert "none" not in [r.title for r in voted]  # opposite frames cast no vote


def test_bootstrap_interval_resamples_whole_groups() -> None:
    """Queries of one source recording move together: the interval over groups is wider than over queries."""
    values = np.array([1.0] * 10 + [0.0] * 10)
    grouped = folds.interval(values, ["a"] * 10 + ["b"] * 10)
    single = folds.interval(values, [str(i) for i in range(20)])
    assert grouped[0] <= 0.5 <= grouped[1] and single[0] <= 0.5 <= single[1]
    assert grouped[1] - grouped[0] > single[1] - single[0]
    assert folds.interval(np.full(6, 0.3), list("abcabc")) == pytest.approx((0.3, 0.3))


def test_the_text_suite_offline_scores_descriptions_by_class(env: Path, tmp_path: Path) -> None:
    """The text suite's two halves on a tiny library in this process: right class first, right moment."""
    from echovids.harness import write_wav
    from evaluation.dataset import Recording, Segment
    from evaluation.offline import OfflineClient
    from evaluation.text_suite import load_descriptions, run_text_clips, run_text_recordings

    descriptions = load_descriptions()
    assert len(descriptions) == 10 and all(len(texts) == 3 for texts in descriptions.values())
    clips = [
        *[c for c in load_clips() if c.label == "dog_bark"][:2],
        *[c for c in load_clips() if c.label == "rain"][:2],
    ]
    client = OfflineClient(tmp_path / "clips")
    assert client.add([(c.path, c.name, [c.label]) for c in clips]) == []
    answer = client.text_search("a dog barking", 2)
    assert (
        answer.status == "done"
        and answer.text_classes
        and {r["title"] for r in answer.results} == {c.name for c in clips if c.label == "dog_bark"}
    )
    report = run_text_clips(client, clips, k=2, zero_shot_k=4, log=lambda _: None)
    assert report["summary"]["per_class"]["dog_bark"]["p@10"] is not None
    assert report["summary"]["descriptions"] == 30
    # A recording: 4 s of quiet, then a dog's bark: a hit is a moment inside the bark, +-0.5 s.
    bark = decode_bytes(clips[0].path.read_bytes())[: 4 * SR]
    quiet = np.zeros(4 * SR, dtype=np.float32)
    path = write_wav(tmp_path / "rec.wav", np.concatenate([quiet + 1e-3, bark]))
    recordings = OfflineClient(tmp_path / "recordings")
    assert recordings.add([(path, "rec", [])]) == []
    rec = Recording("rec", [Segment(0.0, 4.0, "-", "silence"), Segment(4.0, 8.0, clips[0].name, "dog_bark")])
    summary = run_text_recordings(recordings, [rec], k=1, log=lambda _: None)["summary"]
    assert summary["per_class"]["dog_bark"] == 1.0
