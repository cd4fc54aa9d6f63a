"""Unit tests of the pipeline steps, each alone: decoding, framing, voting, landmarks, shard routing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from echovids import audio, audio_params, framing, landmarks
from echovids.catalog import shard_of
from echovids.errors import AudioTooLong, AudioTooShort, SilentAudio, UndecodableAudio
from echovids.harness import write_wav
from echovids.spectrogram import running_max
from echovids.vectors import l2_normalise
from services.embedder.silence import mute_silence
from services.search import matching
from services.search.landmark_index import LandmarkPostings
from services.search.matching import EachClip, aligned_score, best_matches, vote
from tests.sounds import SR, mix_at_snr, synthetic_library

NO_CENTRE = np.zeros(16, dtype=np.float32)  # a library whose average sound is nothing: plain cosines


def encode(src: Path, dst: Path, *args: str) -> Path:
    subprocess.run([audio.ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(src), *args, str(dst)], check=True)
    return dst


@pytest.mark.parametrize(
    ("suffix", "args"),
    [
        (".flac", []),
        (".ogg", ["-c:a", "libvorbis"]),
        (".mp3", []),
        (".m4a", ["-c:a", "aac"]),
        (".webm", ["-c:a", "libopus"]),
    ],
)
def test_decode_common_formats_to_16k_mono(tmp_path: Path, suffix: str, args: list[str]) -> None:
    t = np.arange(3 * 44_100) / 44_100
    wav = write_wav(tmp_path / "src.wav", 0.5 * np.sin(2 * np.pi * 1000 * t), sr=44_100, channels=2)
    decoded = audio.decode_bytes(encode(wav, tmp_path / f"out{suffix}", *args).read_bytes())
    assert decoded.dtype == np.float32
    assert abs(decoded.size / audio_params.SAMPLE_RATE - 3.0) < 0.1
    spectrum = np.abs(np.fft.rfft(decoded[4000:20000]))
    assert abs(np.argmax(spectrum) * audio_params.SAMPLE_RATE / 16000 - 1000) < 20  # still a 1 kHz tone


def test_decode_rejects_garbage_and_limits_length(tmp_path: Path) -> None:
    with pytest.raises(UndecodableAudio):
        audio.decode_bytes(b"definitely not audio" * 100)
    with pytest.raises(UndecodableAudio):
        audio.decode_bytes(b"")
    wav = write_wav(tmp_path / "long.wav", np.zeros(10 * SR))
    with pytest.raises(AudioTooLong):
        audio.decode_file(wav, max_seconds=5)
    assert audio.decode_file(wav, max_seconds=11).size == 10 * SR


def test_float_wav_with_nan_and_overs_is_cleaned(tmp_path: Path) -> None:
    raw = np.full(SR, np.nan, dtype=np.float32)
    raw[:100] = 5.0
    src = tmp_path / "raw.f32"
    raw.tofile(src)
    wav = tmp_path / "float.wav"
    subprocess.run(
        [
            audio.ffmpeg_exe(),
            "-y",
            "-loglevel",
            "error",
            "-f",
            "f32le",
            "-ar",
            "16000",
            "-ac",
            "1",
            "-i",
            str(src),
            "-c:a",
            "pcm_f32le",
            str(wav),
        ],
        check=True,
    )
    decoded = audio.decode_file(wav)
    assert np.isfinite(decoded).all() and np.abs(decoded).max() <= 1.0


def test_non_audio_magic() -> None:
    assert audio.looks_like_non_audio(b"\x89PNG\r\n")
    assert audio.looks_like_non_audio(b"  <html><body>")
    assert not audio.looks_like_non_audio(b"RIFF....WAVEfmt ")
    assert not audio.looks_like_non_audio(b"OggS\x00")


def test_framing_counts_and_hop() -> None:
    assert framing.frame_count(audio_params.MIN_CLIP_SAMPLES - 1) == 0
    assert framing.frame_count(audio_params.MIN_CLIP_SAMPLES) == 1  # a click: one frame, padded with silence
    assert framing.frame_count(audio_params.FRAME_SAMPLES) == 1
    assert framing.frame_count(audio_params.FRAME_SAMPLES + audio_params.FRAME_HOP_SAMPLES) == 2
    x = np.arange(5 * SR, dtype=np.float32)
    frames = framing.frame_waveform(x)
    assert frames.shape[1] == audio_params.FRAME_SAMPLES
    assert frames[3, 0] == 3 * audio_params.FRAME_HOP_SAMPLES
    assert pytest.approx(0.48) == audio_params.FRAME_HOP_S
    with pytest.raises(AudioTooShort):
        framing.frame_waveform(np.zeros(int(0.05 * SR), dtype=np.float32))


def test_vote_prefers_the_consistent_offset() -> None:
    # Two clips of 20 frames: clip 0 matches query frames i at i + 5; clip 1 matches one frame by chance.
    row_clip = np.repeat([0, 1], 20)
    row_frame = np.tile(np.arange(20), 2)
    m = 6
    rows = np.array([[5 + i, 20 + 3] for i in range(m)])
    sims = np.array([[0.8, 0.9] for _ in range(m)])
    clips, offsets, votes = vote(rows, sims, row_clip, row_frame)
    best = {int(c): (int(o), float(v)) for c, o, v in zip(clips, offsets, votes) if v == votes[clips == c].max()}
    assert best[0][0] == 5
    assert best[0][1] > best[1][1]


def test_rescoring_finds_offset_and_query_start() -> None:
    rng = np.random.default_rng(0)
    clip = l2_normalise(rng.standard_normal((30, 16)).astype(np.float32))
    noise = rng.standard_normal((4, 16)).astype(np.float32)
    query = np.concatenate([l2_normalise(noise), clip[10:16]])
    right = aligned_score(query, clip, 6, NO_CENTRE)
    assert right.query_start == 7  # the middle of the clip's part of the query (its frames 4-9)
    assert right.fit > max(aligned_score(query, clip, o, NO_CENTRE).fit for o in (5, 7, 12))
    assert right.score > aligned_score(query, clip, 12, NO_CENTRE).score
    matches = best_matches(np.array([0]), np.array([6]), np.array([3.0]), query, EachClip(lambda c: clip), 1, NO_CENTRE)
    assert (matches[0].offset, matches[0].query_start) == (6, 7)


def test_long_clip_keeps_its_better_sounding_offset_over_its_best_voted() -> None:
    rng = np.random.default_rng(1)

    long_clip = l2_normalise(rng.standard_normal((40, 16)))
    query = long_clip[25:31].copy()
    long_clip[3:9] = l2_normalise(query + 1.2 * rng.standard_normal((6, 16)))  # a look-alike, voted for more
    short_clip = l2_normalise(rng.standard_normal((8, 16)))
    clips_of = {0: long_clip, 1: short_clip}
    clips, offsets, votes = np.array([0, 0, 1, 1]), np.array([3, 25, 0, 6]), np.array([5.0, 2.0, 4.0, 1.0])

    picked = matching.best_per_clip(clips, votes, limit=2)
    lengths = np.array([len(clips_of[int(c)]) for c in clips[picked]])
    # The short clip cannot hold the query twice 4 hops apart: only the long one gets a second alignment.
    assert matching.separation(len(query)) == 4
    assert matching.second_offsets(clips, offsets, votes, picked, lengths, len(query)).tolist() == [1]

    matches = best_matches(clips, offsets, votes, query, EachClip(lambda c: clips_of[c]), 2, NO_CENTRE)
    assert (matches[0].clip, matches[0].offset, matches[0].votes) == (0, 25, 2.0)
    assert [m.clip for m in matches] == [0, 1]  # one match per clip


def test_frame_loudness_is_each_frames_rms_in_dbfs() -> None:
    rng = np.random.default_rng(2)
    waveform = (0.1 * rng.standard_normal(6 * SR)).astype(np.float32)
    waveform[2 * SR : 4 * SR] *= 1e-4  # 80 dB quieter in the middle
    waveform = waveform[: 6 * SR - 3000]  # a tail frame that is partly padding
    frames = framing.frame_waveform(waveform).astype(np.float64)
    direct = 10 * np.log10(np.mean(frames**2, axis=1))
    np.testing.assert_allclose(framing.frame_loudness_db(waveform), direct, atol=1e-3)  # float32 sums
    assert direct.max() == pytest.approx(-20, abs=0.5) and direct.min() == pytest.approx(-100, abs=0.5)


def test_silent_frames_are_muted_and_audio_with_nothing_to_search_by_is_refused() -> None:
    waveform = np.zeros(5 * SR, dtype=np.float32)
    waveform[: 2 * SR] = 0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * SR) / SR)
    vectors = np.ones((framing.frame_count(waveform.size), 4), dtype=np.float32)
    no_hashes, some_hashes = np.zeros(0, np.uint32), np.ones(5, np.uint32)
    muted = mute_silence(vectors, waveform, no_hashes, threshold_dbfs=-60)
    loud = framing.frame_loudness_db(waveform) >= -60
    assert loud[0] and not loud[-1]
    assert (muted[loud] == 1).all() and (muted[~loud] == 0).all()
    assert (vectors == 1).all()  # the caller's array is left alone
    # All quiet, but with landmarks: a quiet copy of a library recording can still be found exactly.
    assert not mute_silence(vectors, 1e-5 * waveform, some_hashes, threshold_dbfs=-60).any()
    with pytest.raises(SilentAudio) as caught:
        mute_silence(vectors, 1e-5 * waveform, no_hashes, threshold_dbfs=-60)
    assert caught.value.code == "silent_audio" and "-60 dB" in caught.value.message


def test_muted_silence_lets_a_mostly_silent_query_find_its_sound() -> None:
    """A bark in 5 s of silence, against a clip of barks and a clip of a sneeze in silence: YAMNet hears
    silence as one vector, so unmuted, the silences decide; muted (zero vectors), the sounds do."""
    rng = np.random.default_rng(4)
    silence, bark, sneeze, engine = (v / np.linalg.norm(v) for v in rng.standard_normal((4, 32)))

    def frames(*rows: np.ndarray, mute: bool) -> np.ndarray:
        noisy = np.array(rows) + 0.05 * rng.standard_normal((len(rows), 32))
        silent = np.array([row is silence for row in rows])
        return np.where(silent[:, None] & mute, 0.0, noisy).astype(np.float32)

    def best_clip(mute: bool) -> int:
        query = frames(bark, *[silence] * 8, mute=mute)
        library = [frames(*[bark] * 4, *[engine] * 5, mute=mute), frames(sneeze, *[silence] * 8, mute=mute)]
        sims = query @ np.concatenate(library).T
        nearest = np.argsort(-sims, axis=1)[:, :4]
        row_clip, row_frame = np.repeat([0, 1], 9), np.tile(np.arange(9), 2)
        clips, offsets, votes = vote(nearest, np.take_along_axis(sims, nearest, 1), row_clip, row_frame)
        matches = best_matches(clips, offsets, votes, query, EachClip(library.__getitem__), 2, np.zeros(32))
        return max(matches, key=lambda m: m.score).clip

    assert best_clip(mute=False) == 1  # the sneeze's silence wins
    assert best_clip(mute=True) == 0


def test_the_librarys_average_sound_is_partly_taken_out_of_similar_scores() -> None:
    """Every sound shares a large common part (YAMNet's embeddings all lean one way): a clip that is little but
    that common part looks like anything, until the library's average sound is partly taken out of both sides."""
    axes, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((16, 3)))
    common, dog, hum = axes.T.astype(np.float32)  # orthonormal: the library's average sound and two characters
    query = np.tile(common + 0.55 * dog, (4, 1))
    library = [np.tile(0.5 * common + dog, (4, 1)), np.tile(common + 0.1 * hum, (4, 1))]  # a dog; a near-nothing
    clips, offsets, votes = np.array([0, 1]), np.array([0, 0]), np.array([1.0, 1.0])

    def best(centre: np.ndarray) -> int:
        return best_matches(clips, offsets, votes, query, EachClip(library.__getitem__), 2, centre)[0].clip

    assert best(NO_CENTRE) == 1
    assert best(common) == 0
    # Muted silence (zero frames) has no sound, average or not: only the frame fit (zero here) counts.
    muted = EachClip(lambda _: np.zeros((4, 16), np.float32))
    silent = matching.align(query, muted, np.zeros(1, int), np.zeros(1, int), 0)
    assert matching.scores(silent, query, common)[0] == 0.0


def test_onset_pairs_find_a_click_train_under_noise() -> None:
    """The moments a train's clicks start survive white noise at 10 dB: they name the clip and the excerpt's
    offset. Pure noise makes no onsets."""
    from echovids import onsets, synthetic

    trains = [synthetic.make_sound("click_train", np.random.default_rng(seed)) for seed in range(6)]
    postings = LandmarkPostings()
    for i, train in enumerate(trains):
        marks = landmarks.extract(train.waveform)
        onset = onsets.is_onset(marks.hashes)
        assert onset.sum() > 10 and not landmarks.is_steady(marks.hashes[onset]).any()
        postings.add(i, marks.hashes, marks.times)
    rng = np.random.default_rng(4)
    live = np.ones(len(trains), dtype=bool)
    for i, train in enumerate(trains):
        start = int(1.5 * SR)
        excerpt = train.waveform[start : start + 3 * SR]
        noisy = mix_at_snr(excerpt, rng.standard_normal(excerpt.size).astype(np.float32), 10.0)
        marks = landmarks.extract_query(noisy)
        onset = onsets.is_onset(marks.hashes)
        found = postings.match(marks.hashes[onset], marks.times[onset], live, limit=3)
        assert found[0].clip == i and abs(found[0].offset * landmarks.HOP_S - 1.5) <= 2 * landmarks.HOP_S
    noise = landmarks.extract_query(0.1 * rng.standard_normal(3 * SR).astype(np.float32))
    assert not onsets.is_onset(noise.hashes).any()


def test_fine_steady_pairs_tell_two_low_hums_apart() -> None:
    """Two hums 11 Hz apart share every coarse steady hash (31 Hz bins: one peak at the lowest bin) and few fine
    one (7.8 Hz bins: each harmonic its own peak); a hum under white noise at 10 dB keeps its fine hashes."""
    t = np.arange(6 * SR) / SR

    def hum(f0: float) -> np.ndarray:
        return sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 7)).astype(np.float32) * 0.2

    fine = [landmarks.extract(hum(f0)).hashes for f0 in (61.0, 72.0)]
    is_fine = [(h & landmarks.FINE_FLAG) != 0 for h in fine]
    coarse = [set(h[landmarks.is_steady(h) & ~f].tolist()) for h, f in zip(fine, is_fine, strict=True)]
    assert coarse[0] == coarse[1]
    held = [set(h[f].tolist()) for h, f in zip(fine, is_fine, strict=True)]
    assert held[0] and held[1] and len(held[0] & held[1]) < len(held[0]) // 4
    assert landmarks.is_steady(fine[0][is_fine[0]]).all()
    noisy = mix_at_snr(hum(61.0)[SR : 4 * SR], np.random.default_rng(2).standard_normal(3 * SR), 10.0)
    query = landmarks.extract_query(noisy.astype(np.float32)).hashes
    assert len(held[0] & set(query.tolist())) >= len(held[0]) // 2


def test_landmarks_find_the_recording_and_offset_under_noise() -> None:
    sounds = synthetic_library(8)
    postings = LandmarkPostings()
    for i, sound in enumerate(sounds):
        marks = landmarks.extract(sound)
        postings.add(i, marks.hashes, marks.times)
    rng = np.random.default_rng(3)
    excerpt = sounds[5][int(2.3 * SR) : int(5.3 * SR)]
    noisy = excerpt + 0.3 * np.std(excerpt) * rng.standard_normal(excerpt.size).astype(np.float32)
    marks = landmarks.extract_query(noisy)
    best = postings.match(marks.hashes, marks.times, np.ones(8, dtype=bool), limit=3)[0]
    assert best.clip == 5
    assert abs((best.query_start + best.offset) * landmarks.HOP_S - best.query_start * landmarks.HOP_S - 2.3) < 0.05
    tombstoned = np.ones(8, dtype=bool)
    tombstoned[5] = False
    assert all(m.clip != 5 for m in postings.match(marks.hashes, marks.times, tombstoned, limit=3))


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (2, 9), (40, 257)])
def test_peak_neighbourhood_max_matches_brute_force(shape: tuple[int, int]) -> None:
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    for axis, radius in ((0, 2), (1, 4), (1, 3), (0, 0)):
        n = x.shape[axis]
        windows = [np.take(x, range(max(0, i - radius), min(n, i + radius + 1)), axis=axis) for i in range(n)]
        expected = np.stack([w.max(axis=axis) for w in windows], axis=axis)
        np.testing.assert_array_equal(running_max(x, radius, axis), expected)


def test_shard_routing_is_stable_and_spread() -> None:
    ids = [f"clip-{i}" for i in range(1000)]
    shards = [shard_of(c, 4) for c in ids]
    assert shards == [shard_of(c, 4) for c in ids]
    assert min(np.bincount(shards, minlength=4)) > 200


@pytest.mark.parametrize(
    ("rate", "width", "channels"), [(16_000, 2, 1), (44_100, 3, 2), (8_000, 1, 1), (48_000, 4, 6), (22_050, 2, 2)]
)
def test_wav_fast_path_matches_ffmpeg(tmp_path: Path, rate: int, width: int, channels: int) -> None:
    t = np.arange(int(1.5 * rate)) / rate
    wav = write_wav(
        tmp_path / "x.wav",
        0.4 * np.sin(2 * np.pi * 700 * t) + 0.2 * np.sin(2 * np.pi * 3100 * t),
        sr=rate,
        sample_width=width,
        channels=channels,
    )
    assert audio.parse_wav(wav.read_bytes()) is not None  # the in-process path is the one taken
    ours = audio.decode_bytes(wav.read_bytes())
    theirs = audio.decode_file(wav)
    assert abs(ours.size - theirs.size) <= 2
    n = min(ours.size, theirs.size)
    # Resamplers differ in their filters: compare the signals where both are settled, not at the edges.
    assert np.abs(ours[200 : n - 200] - theirs[200 : n - 200]).max() < 0.02


def test_float_wav_fast_path_and_truncated_wav_falls_back(tmp_path: Path) -> None:
    samples = np.linspace(-0.5, 0.5, SR, dtype=np.float32)
    header = b"RIFF" + (36 + samples.nbytes).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    header += (3).to_bytes(2, "little") + (1).to_bytes(2, "little") + SR.to_bytes(4, "little")
    header += (SR * 4).to_bytes(4, "little") + (4).to_bytes(2, "little") + (32).to_bytes(2, "little")
    data = header + b"data" + samples.nbytes.to_bytes(4, "little") + samples.tobytes()
    assert np.allclose(audio.decode_bytes(data), samples, atol=1e-6)
    assert audio.parse_wav(data[:-1000]) is None  # truncated: ffmpeg decides
    with pytest.raises(AudioTooLong):
        audio.decode_bytes(data, max_seconds=0.2)


def test_frame_labels_index_a_small_vocabulary() -> None:
    from services.embedder.labels import frame_labels

    names = [f"class{i}" for i in range(10)]
    scores = np.zeros((2, 10), dtype=np.float32)
    scores[0, [7, 2, 5]] = [0.9, 0.8, 0.7]
    scores[1, [2, 9, 7]] = [0.9, 0.5, 0.4]
    found = frame_labels(scores, names)
    vocabulary = [str(n) for n in found["label_names"]]
    assert vocabulary == ["class2", "class5", "class7", "class9"]
    assert [[vocabulary[i] for i in row] for row in found["frame_labels"]] == [
        ["class7", "class2", "class5"],
        ["class2", "class9", "class7"],
    ]
    assert frame_labels(None, names) == {}


def test_yamnet_classes_map_onto_the_audioset_ontology() -> None:
    """Every YAMNet class name resolves to the ontology id its class map gives; a user's own label is left out."""
    import csv

    from echovids.labels import label_ids
    from echovids.settings import get_settings

    with (get_settings().model_dir / "yamnet_class_map.csv").open(newline="") as f:
        classes = list(csv.DictReader(f))
    assert len(classes) == 521
    assert label_ids([c["display_name"] for c in classes]) == [c["mid"] for c in classes]
    assert label_ids(["Dog", "Take 1", "/m/0jbk"]) == ["/m/0bt9lr", "/m/0jbk"]


def test_similar_score_compares_a_short_clip_whole_whatever_the_offset() -> None:
    rng = np.random.default_rng(2)
    sound = rng.standard_normal(16).astype(np.float32)
    query = np.tile(sound / np.linalg.norm(sound), (9, 1))
    clip = query[:6] + 0.01 * rng.standard_normal((6, 16)).astype(np.float32)
    # The query overhangs the 6-frame clip at both offsets: its stretch is the whole clip either way.
    near, far = aligned_score(query, clip, 0, NO_CENTRE), aligned_score(query, clip, -4, NO_CENTRE)
    assert near.fit > far.fit
    assert abs(near.score - far.score) <= matching.RESCORING.fit_weight * (near.fit - far.fit) + 1e-6
    assert near.score == pytest.approx(
        (1 - matching.RESCORING.fit_weight) * 1.0 + matching.RESCORING.fit_weight * near.fit, abs=0.01
    )


def test_short_queries_retrieve_enough_neighbours_to_reach_the_limit() -> None:
    assert matching.neighbours_for(20, limit=200, query_frames=9) == 45  # 9 x 45 >= 2 x 200
    assert matching.neighbours_for(20, limit=100, query_frames=21) == 20  # the setting already suffices


def test_a_client_waits_out_a_redis_outage_says_so_once_and_resumes() -> None:
    import redis

    from echovids.retry import with_backoff

    failures = iter([redis.ConnectionError("down"), redis.TimeoutError("slow")])
    lines: list[str] = []

    def call() -> str:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return "answered"

    assert with_backoff(call, "ingest", first_s=0.01, say=lines.append) == "answered"
    assert len(lines) == 2 and "waiting and retrying" in lines[0] and "resuming" in lines[1]
    # Past give_up_s the last error passes through; an error that is not transient is not retried at all.
    calls: list[str] = []

    def never(error: Exception) -> str:
        calls.append(type(error).__name__)
        raise error

    with pytest.raises(redis.ConnectionError):
        with_backoff(lambda: never(redis.ConnectionError("down")), "x", first_s=0.05, give_up_s=0.2, say=lines.append)
    assert len(calls) >= 2
    calls.clear()
    with pytest.raises(ValueError):
        with_backoff(lambda: never(ValueError("bad")), "x", first_s=0.01)
    assert calls == ["ValueError"]


def test_int8_rows_keep_each_entry_within_half_a_step_and_zero_rows_zero() -> None:
    from echovids.vectors import int8_rows

    rng = np.random.default_rng(0)
    rows = rng.standard_normal((300, 64)).astype(np.float32)
    rows[7] = 0.0
    codes, scales = int8_rows(rows.astype(np.float16), chunk=128)  # chunks that do not divide the rows
    assert codes.dtype == np.int8 and scales.shape == (300,)
    decoded = codes.astype(np.float32) * scales[:, None]
    step = np.abs(rows).max(axis=1) / 127
    assert np.all(np.abs(decoded - rows) <= step[:, None] / 2 + 1e-3 * np.abs(rows))  # float16's own rounding
    assert scales[7] == 0 and not codes[7].any()
    assert np.all(np.abs(codes).max(axis=1)[np.arange(300) != 7] == 127)


def test_a_projection_keeps_unit_frames_unit_and_the_dot_products_of_frames_in_its_span() -> None:
    """Frames near an 8-d subspace of 64 dims: 8 axes plus the rest's norm. In the span dot products are exact; off
    it a frame keeps its norm (the last coordinate); the axes are rotated so that no pair of coordinates carries
    most of a frame (what ScaNN quantises two by two)."""
    from echovids.vectors import Projection

    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((64, 8)))[0].T
    weights = rng.standard_normal((500, 8)) * np.geomspace(4, 0.1, 8)  # energy falling steeply along the axes
    frames = l2_normalise(weights @ basis)
    projection = Projection.fit(frames, 8)
    projected = projection(frames)
    assert projected.shape == (500, 9) and np.allclose(projected[:, -1], 0, atol=1e-3)
    np.testing.assert_allclose(projected @ projected.T, frames @ frames.T, atol=1e-5)
    off = l2_normalise(rng.standard_normal((20, 64)))
    np.testing.assert_allclose(np.linalg.norm(projection(off), axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(projection(off)[:, :-1] @ projected[:, :-1].T, off @ frames.T, atol=1e-5)
    assert not projection(np.zeros((2, 64))).any()
    share = (projected[:, :-1] ** 2).mean(axis=0)
    assert share.max() < 3 * share.mean()  # on the principal axes themselves the first holds ~2/3
