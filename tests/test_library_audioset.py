"""AudioSet import: TFRecord SequenceExamples in the real format (written by TensorFlow here), segment CSVs,
malformed input counted, the 0.48 s time base, and a YAMNet query refused against a VGGish library."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.audioset_import import sequence_example
from echovids.harness import Stack, write_wav
from tests.conftest import external_redis, stack_on_own_redis
from tests.sounds import synthetic_library

REDIS_URL = external_redis(12)  # this module's own database (see conftest)

IDS = ["-0RWZT-miFs", "--PJHxphWEs", "a1b2c3d4e5F", "Zz_9-8x7w6V", "q-q_q-q_q-q"]


def features_for(seed: int, n: int = 10) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 128)).astype(np.uint8)


@pytest.fixture(scope="module")
def audioset_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A segment CSV and a folder of TFRecords in the released format, with a few faults planted."""
    import tensorflow as tf

    root = tmp_path_factory.mktemp("audioset")
    csv_path = root / "eval_segments.csv"
    csv_path.write_text(
        "# Segments csv created Sun Mar  5 10:54:25 2017\n"
        "# num_ytids=5, num_segs=5, num_unique_labels=3, num_positive_labels=7\n"
        "# YTID, start_seconds, end_seconds, positive_labels\n"
        f'{IDS[0]}, 30.000, 40.000, "/m/0bt9lr,/m/068hy"\n'
        f'{IDS[1]}, 0.000, 10.000, "/m/05zppz"\n'
        f'{IDS[2]}, 10.000, 20.000, "/m/0bt9lr"\n'
        f'{IDS[3]}, 5.000, 15.000, "/m/068hy,/m/0bt9lr"\n'
        'not-an-id, 1.0, 2.0, "/m/0bt9lr"\n'  # malformed: id
        f'{IDS[4]}, ten, 20.0, "/m/0bt9lr"\n'  # malformed: number
        f"{IDS[4]}, 1.0\n"  # malformed: columns
        'zzzzzzzzzzz, 0.000, 10.000, "/m/0bt9lr"\n'  # a segment without features
    )
    folder = root / "bal_train"
    folder.mkdir()
    with tf.io.TFRecordWriter(str(folder / "-0.tfrecord")) as w:
        w.write(sequence_example(IDS[0], 30.0, 40.0, [74, 72], features_for(0)))
        w.write(sequence_example(IDS[1], 0.0, 10.0, [0], features_for(1)))
        w.write(b"\x0a\x05garbage that is no SequenceExample")  # malformed record, framing intact
        w.write(sequence_example("NOTINCSV123", 0.0, 10.0, [1], features_for(9)))
    with tf.io.TFRecordWriter(str(folder / "a1.tfrecord")) as w:
        w.write(sequence_example(IDS[2], 10.0, 20.0, [74], features_for(2)))
        w.write(sequence_example(IDS[3], 5.0, 15.0, [72, 74], features_for(3, n=7)))
    # A file cut short mid-record: the complete record is read, the torn one counted.
    torn = folder / "zz.tfrecord"
    with tf.io.TFRecordWriter(str(torn)) as w:
        w.write(sequence_example(IDS[4], 0.0, 10.0, [0], features_for(4)))
    data = torn.read_bytes()
    torn.write_bytes(data + data[: len(data) // 2])
    return csv_path, folder


def test_sequence_examples_parse_without_tensorflow(audioset_files: tuple[Path, Path]) -> None:
    from echovids.audioset import MalformedRecord, parse_sequence_example, tfrecords

    records = list(tfrecords(audioset_files[1] / "-0.tfrecord"))
    assert len(records) == 4
    first = parse_sequence_example(records[0])  # type: ignore[arg-type]
    assert (first.video_id, first.start_s, first.end_s, first.labels) == (IDS[0], 30.0, 40.0, [74, 72])
    assert np.array_equal(first.features, features_for(0))
    with pytest.raises(MalformedRecord):
        parse_sequence_example(records[2])  # type: ignore[arg-type]
    torn = list(tfrecords(audioset_files[1] / "zz.tfrecord"))
    assert isinstance(torn[0], bytes) and isinstance(torn[1], MalformedRecord)


def test_a_damaged_length_header_is_caught(tmp_path: Path) -> None:
    from echovids.audioset import MalformedRecord, masked_crc, tfrecords

    good = struct.pack("<Q", 3)
    (tmp_path / "ok.tfrecord").write_bytes(good + struct.pack("<I", masked_crc(good)) + b"abc" + b"\0" * 4)
    assert list(tfrecords(tmp_path / "ok.tfrecord")) == [b"abc"]
    (tmp_path / "bad.tfrecord").write_bytes(struct.pack("<Q", 9999) + struct.pack("<I", masked_crc(good)) + b"abc")
    assert isinstance(next(tfrecords(tmp_path / "bad.tfrecord")), MalformedRecord)


def test_segments_csv(audioset_files: tuple[Path, Path]) -> None:
    from echovids.audioset import read_segments, segment_key

    segments, bad = read_segments(audioset_files[0])
    assert len(segments) == 5 and len(bad) == 3
    assert segments[segment_key(IDS[0], 30.0)].labels == ["/m/0bt9lr", "/m/068hy"]


def test_features_become_unit_vectors_at_their_own_hop() -> None:
    from echovids.audioset import to_search_frames, vggish_space
    from echovids.vectors import dequantize

    q = np.array([[0, 255, 128] + [0] * 125], dtype=np.uint8)
    assert np.allclose(dequantize(q)[0, :3], [-2.0, 2.0, 128 * 4 / 255 - 2], atol=1e-6)
    features = features_for(5, n=6)
    frames = to_search_frames(features)
    assert frames.shape == (6, 128)  # one frame per feature: nothing made up at the 0.48 s hop
    direct = dequantize(features) / np.linalg.norm(dequantize(features), axis=1, keepdims=True)
    assert np.allclose(frames, direct, atol=1e-6)
    assert vggish_space().hop_s == 0.96


def test_a_clip_at_two_hops_a_frame_reads_at_the_query_hop() -> None:
    """Position 2j is feature j; 2j + 1 the normalised mix of j and j + 1 (the last repeats itself)."""
    from echovids.audioset import to_search_frames
    from services.search.matching import Upsampled

    frames = to_search_frames(features_for(7, n=5)).astype(np.float16)
    read = Upsampled(frames, 2)
    assert read.shape == (10, 128)
    whole = read[:].astype(np.float32)
    assert np.allclose(whole[0::2], frames, atol=1e-3)
    mix = frames[:-1].astype(np.float32) + frames[1:].astype(np.float32)
    assert np.allclose(whole[1:-1:2], mix / np.linalg.norm(mix, axis=1, keepdims=True), atol=1e-3)
    assert np.allclose(whole[9], frames[4], atol=1e-3)
    assert np.allclose(read[3:7].astype(np.float32), whole[3:7])


@pytest.mark.parametrize("start_s", [3.84, 4.32])  # on a feature's start, and between two
def test_a_match_inside_an_audioset_clip_lands_at_the_right_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_s: float
) -> None:
    """Query frames every 0.48 s from ``start_s`` into a clip stored every 0.96 s: the match's start lies there."""
    from echovids.audio_params import FRAME_HOP_S
    from echovids.audioset import to_search_frames, vggish_space
    from echovids.settings import get_settings
    from services.search.matching import Upsampled
    from services.search.query import search_shard
    from services.search.shard import ShardIndex

    monkeypatch.setenv("ECHOVIDS_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    space = vggish_space()
    index = ShardIndex(tmp_path, 0)
    empty = {"hashes": np.empty(0, dtype=np.uint32), "times": np.empty(0, dtype=np.int32)}
    for i in range(5):
        arrays = {"vectors": to_search_frames(features_for(100 + i)), **empty}
        index.write_segment(f"yt_clip{i}", arrays, space.key, space.hop_s)
    index.refresh()
    assert index.view().rows == 5 * 10  # AudioSet's 10 features a clip, stored as they are
    # What a VGGish model framing every 0.48 s gives for that stretch, near enough: the clip read at that hop.
    first = round(start_s / FRAME_HOP_S)
    query = Upsampled(to_search_frames(features_for(102)).astype(np.float16), 2)[first : first + 8]
    found = search_shard(index, space.key, {"vectors": query.astype(np.float32), **empty}, limit=5)
    best = max(found, key=lambda c: c.score)
    # The moment reported is the middle of the matching stretch; the query's start is at its offset before it.
    assert best.clip_id == "yt_clip2" and abs(best.match_start_s - best.query_start_s - start_s) < 0.01, best
    assert start_s <= best.match_start_s < start_s + 8 * FRAME_HOP_S
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def vggish_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from stack_on_own_redis(tmp_path_factory.mktemp("audioset-stack") / "data", REDIS_URL)


def test_import_then_a_yamnet_query_is_refused(
    vggish_stack: Stack, audioset_files: tuple[Path, Path], tmp_path: Path
) -> None:
    csv_path, folder = audioset_files
    done = vggish_stack.cli(
        "import-audioset", "--segments", str(csv_path), "--features", str(folder), "--progress-every", "0"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "imported 4 AudioSet clips (0 already in the library)" in done.stdout, done.stdout
    # Where it stands, on stderr, as it goes: sending, then the shards' indexing, to the last clip.
    assert "clips sent to the shards" in done.stderr, done.stderr
    assert "all 7 records read and 4 clips sent in" in done.stderr and "waiting for the shards" in done.stderr
    assert "4 of 4 clips settled (0 failed)" in done.stderr, done.stderr
    assert "2 malformed records, 3 malformed CSV lines, 2 records not in the segment CSVs" in done.stdout
    assert "1 segments without features" in done.stdout  # zzzzzzzzzzz (IDS[4]'s CSV lines are bad)
    listing = httpx.get(f"{vggish_stack.url}/v1/library", params={"label": "Dog"}).json()
    assert listing["total"] == 3
    clip = httpx.get(f"{vggish_stack.url}/v1/library/yt_{IDS[0]}_30000").json()
    assert clip["status"] == "ready" and clip["space"] == "vggish:audioset-pca-uint8:128"
    assert clip["labels"] == ["Dog", "Domestic animals, pets"]  # AudioSet ids, named by the ontology
    assert clip["source"]["kind"] == "youtube" and clip["source"]["youtube_id"] == IDS[0]
    assert (clip["source"]["start_s"], clip["source"]["end_s"], clip["duration_s"]) == (30.0, 40.0, 10.0)
    segment = vggish_stack.data_dir / "shards" / "0" / "segments" / f"yt_{IDS[0]}_30000.npz"
    with np.load(segment) as data:
        assert data["vectors"].shape == (10, 128) and float(data["hop_s"]) == 0.96  # AudioSet's own hop

    again = vggish_stack.cli("import-audioset", "--segments", str(csv_path), "--features", str(folder))
    assert "imported 0 AudioSet clips (4 already in the library)" in again.stdout, again.stdout

    query = write_wav(tmp_path / "q.wav", synthetic_library(1, seconds=3.0)[0])
    job = vggish_stack.search(query)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "embedding_space_mismatch"
    assert "vggish:audioset-pca-uint8:128" in job["error"]["message"] and "yamnet" in job["error"]["message"]

    # And YAMNet audio cannot be added beside them: the file's job fails with the same code.
    with query.open("rb") as f:
        answer = httpx.post(f"{vggish_stack.url}/v1/library", files={"file": ("q.wav", f, "audio/wav")}).json()
    deadline = time.monotonic() + 60
    while (clip := httpx.get(f"{vggish_stack.url}/v1/library/{answer[0]['clip_id']}").json())["status"] == "pending":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert clip["status"] == "failed" and clip["error"]["code"] == "embedding_space_mismatch"
