"""Fine alignment of exact matches: when two library recordings both hold a query, the louder one goes first."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from echovids import clip_audio, landmarks
from echovids.audio import decode_file, decode_window, ffmpeg_exe
from echovids.audio_params import SAMPLE_RATE
from echovids.harness import write_wav
from echovids.schemas import MatchKind, ShardCandidate
from evaluation.dataset import DEFAULT_ESC10
from services.search.landmark_index import LandmarkPostings
from services.search.query import rank_answers
from services.search.verify import demote_chance_exact, settle_exact, spectral_fit, waveform_fit
from tests.sounds import mix_at_snr

# A ticking clock with a rooster 10 dB under it: the rooster's harmonics are peakier, so the landmark votes,
# weighted by peak loudness, still rank it first.
LOUD = DEFAULT_ESC10 / "audio" / "esc10_clock_tick_2-127108-A.ogg"
QUIET = DEFAULT_ESC10 / "audio" / "esc10_rooster_5-200334-A.ogg"


def candidate(clip_id: str, match: MatchKind, offset_s: float = 0.0, votes: float = 1.0) -> ShardCandidate:
    return ShardCandidate(
        clip_id=clip_id, match=match, match_start_s=offset_s + 0.2, query_start_s=0.2, score=0.5, votes=votes
    )


def test_window_of_a_wav_and_of_a_flac_is_that_stretch_of_the_whole(tmp_path: Path) -> None:
    tone = (0.3 * np.sin(np.arange(4 * SAMPLE_RATE) / 7)).astype(np.float32)
    wav = write_wav(tmp_path / "a.wav", tone)
    flac = tmp_path / "a.flac"
    subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(wav), str(flac)], check=True)
    whole = decode_file(wav)
    for path in (wav, flac):  # in place (mapped WAV) and through ffmpeg's seek
        np.testing.assert_allclose(decode_window(path, 1.5, 1.0), whole[24_000:40_000], atol=1e-6)
        assert decode_window(path, 3.5, 1.0).size == 8_000  # cut short at the end
    assert decode_window(wav, 5.0, 1.0).size == 0


def test_spectral_fit_prefers_the_source_that_carries_the_energy() -> None:
    rng = np.random.default_rng(3)
    loud, quiet = rng.standard_normal(SAMPLE_RATE * 2), np.sin(np.arange(SAMPLE_RATE * 2) / 3)
    query = mix_at_snr(loud, quiet, 10).astype(np.float32)
    assert spectral_fit(query, query) == pytest.approx(1.0, abs=1e-5)
    assert spectral_fit(query, loud.astype(np.float32)) > spectral_fit(query, quiet.astype(np.float32)) + 0.2
    assert spectral_fit(query, np.zeros(10, np.float32)) == 0.0  # silence (or nothing) explains nothing


def test_a_single_exact_match_is_left_alone_and_the_query_never_decoded() -> None:
    ranked = [candidate("a", MatchKind.exact), candidate("b", MatchKind.similar), candidate("c", MatchKind.similar)]

    def never() -> np.ndarray:
        raise AssertionError("decoded the query for nothing")

    assert settle_exact(ranked, never) == ranked


def test_clips_without_audio_keep_their_places() -> None:
    rng = np.random.default_rng(5)
    query = rng.standard_normal(SAMPLE_RATE).astype(np.float32)
    audio = {"b": np.zeros(SAMPLE_RATE, np.float32), "c": query}
    ranked = [candidate(x, MatchKind.exact) for x in ("a", "b", "c")] + [candidate("d", MatchKind.similar)]
    settled = settle_exact(ranked, lambda: query, lambda clip, _t, _s: audio.get(clip))
    assert [c.clip_id for c in settled] == ["a", "c", "b", "d"]


@pytest.mark.skipif(not LOUD.exists(), reason="ESC-10 recordings not at ../shared/data/esc10")
def test_louder_recording_goes_first_where_landmark_votes_prefer_the_quiet_one(env: Path) -> None:
    loud, quiet = decode_file(LOUD), decode_file(QUIET)
    query = mix_at_snr(loud[8_000:56_000], quiet[16_000:64_000], 10).astype(np.float32)
    postings = LandmarkPostings()
    for clip, samples in enumerate((loud, quiet)):
        marks = landmarks.extract(samples)
        postings.add(clip, marks.hashes, marks.times)
        clip_audio.save(("loud", "quiet")[clip], (LOUD, QUIET)[clip].read_bytes(), "x.ogg")
    marks = landmarks.extract_query(query)
    found = {m.clip: m for m in postings.match(marks.hashes, marks.times, np.ones(2, bool), 2, marks.weights)}
    assert found[1].weight > found[0].weight  # without the spectral check the rooster would win
    ranked = [
        candidate(("loud", "quiet")[clip], MatchKind.exact, found[clip].offset * landmarks.HOP_S, found[clip].weight)
        for clip in (1, 0)
    ]
    settled = settle_exact(ranked, lambda: query)  # the stored .ogg files, read through ffmpeg
    assert [c.clip_id for c in settled] == ["loud", "quiet"]
    assert settled[0].match_start_s - settled[0].query_start_s == pytest.approx(0.5, abs=0.02)


def test_exact_matches_far_weaker_than_the_strongest_rank_as_similar() -> None:
    ranked = [
        candidate("own", MatchKind.exact, votes=100.0),
        candidate("chance", MatchKind.exact, votes=5.0),
        candidate("interferer", MatchKind.exact, votes=40.0),
        candidate("alike", MatchKind.similar),
    ]
    ranked[1] = ranked[1].model_copy(update={"score": 0.2})
    settled = demote_chance_exact(ranked)
    assert [(c.clip_id, c.match) for c in settled] == [
        ("own", MatchKind.exact),
        ("interferer", MatchKind.exact),
        ("alike", MatchKind.similar),  # score 0.5
        ("chance", MatchKind.similar),  # score 0.2
    ]
    # The leader stays exact even when weaker than one behind it (the spectral check put it first).
    leader_weak = [candidate("loud", MatchKind.exact, votes=5.0), candidate("peaky", MatchKind.exact, votes=100.0)]
    assert [c.match for c in demote_chance_exact(leader_weak)] == [MatchKind.exact, MatchKind.exact]


def _tone_with_drift(seconds: float, freq: float, seed: int) -> np.ndarray:
    from echovids import synthetic

    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * freq * t) * synthetic._drift(rng, t)).astype(np.float32)


def test_a_tone_under_noise_is_found_by_its_waveform_at_its_moment_and_another_tone_is_not() -> None:
    rng = np.random.default_rng(8)
    clip = _tone_with_drift(8.0, 523.0, seed=1)
    start = 2 * SAMPLE_RATE + 1234
    query = mix_at_snr(clip[start : start + 3 * SAMPLE_RATE], rng.standard_normal(3 * SAMPLE_RATE), 10).astype(
        np.float32
    )
    fit = waveform_fit(query, clip)
    assert fit is not None and fit.correlation > 0.9  # sqrt(10 / 11) = 0.95 for a copy under 10 dB of noise
    assert fit.start_s == pytest.approx(start / SAMPLE_RATE, abs=0.01)
    other = waveform_fit(query, _tone_with_drift(8.0, 530.0, seed=2))
    assert other is not None and other.correlation < 0.3
    # A query longer than the clip (a short sound inside it) scores what they share, at a negative start.
    click = clip[:1600]
    inside = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), click, np.zeros(SAMPLE_RATE // 2, np.float32)])
    placed = waveform_fit(inside, click)
    assert placed is not None and placed.correlation > 0.99 and placed.start_s == pytest.approx(-1.0, abs=1e-3)


def test_a_click_train_match_says_its_period() -> None:
    rng = np.random.default_rng(4)
    clip = np.zeros(6 * SAMPLE_RATE, np.float32)
    click = rng.standard_normal(160).astype(np.float32) * np.exp(-np.arange(160) / 30).astype(np.float32)
    for at in range(0, clip.size - 160, SAMPLE_RATE // 4):  # every 0.25 s
        clip[at : at + 160] += click
    query = mix_at_snr(clip[SAMPLE_RATE : 3 * SAMPLE_RATE], rng.standard_normal(2 * SAMPLE_RATE), 10)
    fit = waveform_fit(query.astype(np.float32), clip)
    assert fit is not None and fit.correlation > 0.75
    assert fit.period_s == pytest.approx(0.25, abs=0.02)
    assert waveform_fit(query.astype(np.float32), _tone_with_drift(6.0, 440.0, 3)).period_s is None


def test_the_merge_names_the_clip_that_holds_the_waveform_exact_and_demotes_a_checked_landmark_match() -> None:
    rng = np.random.default_rng(6)
    clips = {
        "tone": _tone_with_drift(8.0, 700.0, 5),
        "noise": (0.1 * rng.standard_normal(8 * SAMPLE_RATE)).astype(np.float32),
    }
    start = 3 * SAMPLE_RATE
    query = mix_at_snr(clips["tone"][start : start + 2 * SAMPLE_RATE], rng.standard_normal(2 * SAMPLE_RATE), 10)

    def window_of(clip: str, start_s: float, seconds: float) -> np.ndarray | None:
        a = max(0, round(start_s * SAMPLE_RATE))
        return clips[clip][a : a + round(seconds * SAMPLE_RATE)] if clip in clips else None

    ranked = [
        candidate("noise", MatchKind.exact, votes=50.0),  # a chance landmark alignment
        candidate("elsewhere", MatchKind.similar).model_copy(update={"score": 0.6}),  # no stored audio
        candidate("tone", MatchKind.similar, offset_s=0.0).model_copy(update={"recheck": 0, "votes": 9.0}),
    ]
    settled = rank_answers(ranked, 10, lambda: query.astype(np.float32), window_of)
    assert [(c.clip_id, c.match) for c in settled] == [
        ("tone", MatchKind.exact),
        ("elsewhere", MatchKind.similar),
        ("noise", MatchKind.similar),
    ]
    assert settled[0].match_start_s - settled[0].query_start_s == pytest.approx(3.0, abs=0.01)
    assert all(c.recheck is None for c in settled)


def test_steady_tones_leave_steady_landmarks_that_survive_noise() -> None:
    rng = np.random.default_rng(2)
    clip = _tone_with_drift(6.0, 1000.0, 7)
    peaks = landmarks.extract(clip)
    steady = peaks.hashes[(peaks.hashes & 63) >= landmarks.STEADY_DT]
    assert steady.size > 0
    assert np.count_nonzero((peaks.hashes & 63) < landmarks.STEADY_DT) < steady.size  # few peak pairs: it is steady
    query = mix_at_snr(clip[SAMPLE_RATE : 4 * SAMPLE_RATE], rng.standard_normal(3 * SAMPLE_RATE), 10).astype(np.float32)
    noisy = landmarks.extract_query(query).hashes
    assert np.isin(np.unique(steady), noisy).all()


def test_a_short_sound_inside_a_louder_recording_leads_the_similar_ones_at_its_moment() -> None:
    rng = np.random.default_rng(11)
    beep = _tone_with_drift(0.4, 1500.0, 9)
    room = (0.4 * rng.standard_normal(5 * SAMPLE_RATE)).astype(np.float32)
    at = round(2.3 * SAMPLE_RATE)
    room[at : at + beep.size] += beep  # about as loud as the room there
    clips = {"room": room, "other": (0.2 * rng.standard_normal(5 * SAMPLE_RATE)).astype(np.float32)}
    query = mix_at_snr(beep, rng.standard_normal(beep.size), 20).astype(np.float32)

    def window_of(clip: str, start_s: float, seconds: float) -> np.ndarray | None:
        a = max(0, round(start_s * SAMPLE_RATE))
        return clips[clip][a : a + round(seconds * SAMPLE_RATE)]

    ranked = [
        candidate("other", MatchKind.similar).model_copy(update={"score": 0.7}),
        candidate("room", MatchKind.similar).model_copy(update={"score": 0.4}),
    ]
    settled = rank_answers(ranked, 10, lambda: query, window_of)
    assert [(c.clip_id, c.match) for c in settled] == [("room", MatchKind.similar), ("other", MatchKind.similar)]
    assert 0.35 < (settled[0].correlation or 0.0) < 0.75  # held in part: not claimed as the very recording
    assert settled[0].match_start_s - settled[0].query_start_s == pytest.approx(2.3, abs=0.01)


def test_a_recheck_the_fingerprint_places_elsewhere_is_verified_there_too() -> None:
    """Hits sound alike along their clip: the embedding may rank the right clip at the wrong hit. Where an onset
    match places the query elsewhere in it, the merge looks at both places and finds the copy at the second."""
    from echovids import synthetic

    first, second = (synthetic.make_sound("hit", np.random.default_rng(seed)).waveform for seed in (3, 4))
    hits = np.concatenate([first, second])  # 12-20 s, no stretch of it twice
    at_s = first.size / SAMPLE_RATE + 1.0
    start = round(at_s * SAMPLE_RATE)
    noise = np.random.default_rng(1).standard_normal(3 * SAMPLE_RATE)
    query = mix_at_snr(hits[start : start + 3 * SAMPLE_RATE], noise, 10)

    def window_of(clip: str, start_s: float, seconds: float) -> np.ndarray | None:
        a = max(0, round(start_s * SAMPLE_RATE))
        return hits[a : a + round(seconds * SAMPLE_RATE)]

    embedded = candidate("hits", MatchKind.similar, offset_s=0.5).model_copy(update={"recheck": 0})
    alone = rank_answers([embedded], 10, lambda: query.astype(np.float32), window_of)
    assert alone[0].match == MatchKind.similar  # 6 s or more off: its window does not reach the copy
    both = rank_answers(
        [embedded.model_copy(update={"recheck_at_s": at_s})], 10, lambda: query.astype(np.float32), window_of
    )
    assert both[0].match == MatchKind.exact
    assert both[0].match_start_s - both[0].query_start_s == pytest.approx(at_s, abs=0.01)
    assert both[0].recheck_at_s is None  # what a shard asked the merge means nothing past it


def test_a_shard_sends_the_merge_its_best_and_every_recheck_however_far_down() -> None:
    """A tone's own clip, held by its steady hashes, ranks far down by embedding score: cut at forwarded(k) with
    the rest, it never reached the audio that names it exact (through the system, not offline)."""
    from services.search.query import forwarded, sent_to_merge

    found = [candidate(f"c{i}", MatchKind.similar).model_copy(update={"score": 1 - i / 100}) for i in range(60)]
    found[45] = found[45].model_copy(update={"recheck": 0})
    sent = sent_to_merge(found, 10)
    assert [c.clip_id for c in sent] == [f"c{i}" for i in range(forwarded(10))] + ["c45"]
    assert sent_to_merge(found[:5], 10) == found[:5]


def test_two_far_places_of_one_candidate_are_not_read_as_one_long_window() -> None:
    """An hour-long recording aligned by the embedding at 10 s and by a fingerprint at 3000 s: the two places are
    read as two short windows, not the 50 minutes between them."""
    reads: list[tuple[float, float]] = []

    def window_of(clip: str, start_s: float, seconds: float) -> np.ndarray | None:
        reads.append((start_s, seconds))
        return np.zeros(round(seconds * SAMPLE_RATE), np.float32)

    far = candidate("long", MatchKind.similar, offset_s=10.0).model_copy(update={"recheck": 0, "recheck_at_s": 3000.0})
    rank_answers([far], 10, lambda: np.ones(2 * SAMPLE_RATE, np.float32), window_of)
    assert sorted(round(start) for start, _ in reads) == [8, 2998] and all(seconds < 10 for _, seconds in reads)


def test_a_short_query_verifies_rechecks_deeper_than_the_budget_reaches() -> None:
    """A short sound inside a recording: its recording is a few places down a fingerprint list, below the first
    three rechecks and beyond what the budget reads in rank order; the merge still verifies it."""
    rng = np.random.default_rng(5)
    sound = rng.standard_normal(SAMPLE_RATE // 2).astype(np.float32)
    room = 0.1 * rng.standard_normal(5 * SAMPLE_RATE).astype(np.float32)
    room[2 * SAMPLE_RATE : 2 * SAMPLE_RATE + sound.size] += sound
    others = {f"n{i}": rng.standard_normal(5 * SAMPLE_RATE).astype(np.float32) for i in range(30)}

    def window_of(clip: str, start_s: float, seconds: float) -> np.ndarray | None:
        audio = room if clip == "room" else others[clip]
        a = max(0, round(start_s * SAMPLE_RATE))
        return audio[a : a + round(seconds * SAMPLE_RATE)]

    ranked = [
        candidate(f"n{i}", MatchKind.similar).model_copy(update={"score": 1 - i / 100, "recheck": i}) for i in range(30)
    ]
    ranked.insert(25, candidate("room", MatchKind.similar).model_copy(update={"score": 0.1, "recheck": 6}))
    settled = rank_answers(ranked, 10, lambda: sound, window_of)
    assert settled[0].clip_id == "room" and settled[0].match == MatchKind.exact
    assert settled[0].match_start_s - settled[0].query_start_s == pytest.approx(2.0, abs=0.01)
