"""AudioSet import at scale: a synthetic release of N segments imported into a fresh `echovids serve`.

The release is written as Google ships it (a segment CSV with its comment header; TFRecord files of
``tf.train.SequenceExample``, context ``video_id`` / ``start_time_seconds`` / ``end_time_seconds`` / ``labels``,
feature list ``audio_embedding`` of 128 uint8 per 0.96 s), 10 features a segment as in the real one. Then
`echovids import-audioset` runs against the stack, as a user runs it, and is timed:

- ``submit_rate``: segments read, parsed and sent a second (the importer's own work);
- ``indexed_rate``: segments a second until the last one is ``ready`` (the shards' work included: segment
  files, and the compactions the growing shard triggers on the way);
- ``importer_peak_mb``: the importer process's peak RSS (sampled every 0.2 s), and ``search_pss_mb``: the search
  processes' PSS once everything is indexed; ``search_empty_pss_mb`` the same before the import began, and
  ``bytes_per_frame`` the growth between the two per stored frame.

Writing needs TensorFlow (``tf.io.TFRecordWriter`` frames and checksums the records); the import itself does not.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.scale import search_pss_mb
from echovids.harness import machine_info, make_stack

FEATURES_PER_SEGMENT = 10  # AudioSet's segments are 10 s, one VGGish feature per 0.96 s
RECORDS_PER_FILE = 4096
# A few real AudioSet classes (Speech, Music, Dog, Vehicle): the import names them through the ontology.
LABELS = ["/m/09x0r", "/m/04rlf", "/m/0bt9lr", "/m/07yv9"]
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def stored_frames(data_dir: Path) -> int:
    """Frames the shards' segment files hold, read from each one's array header (not its data)."""
    total = 0
    for path in data_dir.glob("shards/*/segments/*.npz"):
        with zipfile.ZipFile(path) as npz, npz.open("vectors.npy") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, _ = read_header(f)
            total += int(shape[0])
    return total


@dataclass
class ImportBenchReport:
    segments: int
    frames: int  # as stored: one per AudioSet feature, at its 0.96 s hop
    write_s: float
    submit_s: float
    indexed_s: float
    submit_rate: float
    indexed_rate: float
    importer_peak_mb: float
    search_pss_mb: float
    search_empty_pss_mb: float
    bytes_per_frame: float
    summary: str
    machine: dict[str, Any] = field(default_factory=machine_info)


def sequence_example(video_id: str, start: float, end: float, labels: list[int], frames: np.ndarray) -> bytes:
    """One record of the release: a SequenceExample as AudioSet's TFRecords hold it."""
    import tensorflow as tf

    example = tf.train.SequenceExample()
    context = example.context.feature
    context["video_id"].bytes_list.value.append(video_id.encode())
    context["start_time_seconds"].float_list.value.append(start)
    context["end_time_seconds"].float_list.value.append(end)
    context["labels"].int64_list.value.extend(labels)
    features = example.feature_lists.feature_list["audio_embedding"]
    for row in frames:
        features.feature.add().bytes_list.value.append(row.astype(np.uint8).tobytes())
    return example.SerializeToString()


def youtube_id(i: int) -> str:
    """An 11-character id of YouTube's alphabet, distinct for every i."""
    chars = []
    for _ in range(11):
        i, digit = divmod(i, 64)
        chars.append(_ID_ALPHABET[digit])
    return "".join(reversed(chars))


def write_release(root: Path, segments: int, seed: int = 0) -> tuple[Path, Path]:
    """The segment CSV and a folder of TFRecords for ``segments`` segments of 10 s."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    folder = root / "features"
    folder.mkdir(parents=True, exist_ok=True)
    csv_lines = [
        "# Segments csv created by echovids bench audioset",
        f"# num_ytids={segments}, num_segs={segments}, num_unique_labels={len(LABELS)}",
        "# YTID, start_seconds, end_seconds, positive_labels",
    ]
    for first in range(0, segments, RECORDS_PER_FILE):
        count = min(RECORDS_PER_FILE, segments - first)
        features = rng.integers(0, 256, size=(count, FEATURES_PER_SEGMENT, 128), dtype=np.uint8)
        with tf.io.TFRecordWriter(str(folder / f"{first // RECORDS_PER_FILE:05d}.tfrecord")) as writer:
            for j in range(count):
                ytid, start = youtube_id(first + j), float(10 * (j % 3))
                label = (first + j) % len(LABELS)
                writer.write(sequence_example(ytid, start, start + 10.0, [label], features[j]))
                csv_lines.append(f'{ytid}, {start:.3f}, {start + 10.0:.3f}, "{LABELS[label]}"')
    csv_path = root / "segments.csv"
    csv_path.write_text("\n".join(csv_lines) + "\n")
    return csv_path, folder


def _peak_rss_mb(proc: subprocess.Popen[str], stop: threading.Event, peak: list[float]) -> None:
    import psutil

    try:
        process = psutil.Process(proc.pid)
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss / 2**20)
            time.sleep(0.2)
    except psutil.Error:
        return  # it ended


def run(segments: int = 200_000, workdir: Path | None = None, log: Callable[[str], None] = print) -> ImportBenchReport:
    import tempfile

    root = workdir or Path(tempfile.mkdtemp(prefix="echovids-audioset-"))
    started = time.monotonic()
    csv_path, features = write_release(root, segments)
    write_s = time.monotonic() - started
    log(f"release of {segments} segments written in {write_s:.0f} s; importing ...")
    data_dir = root / "data"
    stack = make_stack(data_dir, None, keep_settings=True)  # ECHOVIDS_* tuning of the caller applies
    stack.log_path = root / "serve.log"
    stack.start(timeout=600)
    try:
        empty_pss, _ = search_pss_mb(stack)
        command = [sys.executable, "-m", "echovids.cli", "import-audioset", "--segments", str(csv_path)]
        proc = subprocess.Popen(
            [*command, "--features", str(features)],
            env=stack.env,
            cwd=stack.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        stop, peak = threading.Event(), [0.0]
        sampler = threading.Thread(target=_peak_rss_mb, args=(proc, stop, peak), daemon=True)
        sampler.start()
        out, err = proc.communicate()
        stop.set()
        sampler.join()
        if proc.returncode != 0:
            raise RuntimeError(f"import-audioset failed ({proc.returncode}): {err[-2000:]}")
        pss, _ = search_pss_mb(stack)
    finally:
        stack.stop()
    summary = out.strip().splitlines()[-1]
    if f"imported {segments} AudioSet clips" not in summary or "0 failed to index" not in summary:
        raise RuntimeError(f"the import did not index every segment: {summary}")
    submit_s, indexed_s = _times(summary)
    frames = stored_frames(data_dir)
    return ImportBenchReport(
        segments=segments,
        frames=frames,
        write_s=round(write_s, 1),
        submit_s=submit_s,
        indexed_s=indexed_s,
        submit_rate=round(segments / submit_s, 1),
        indexed_rate=round(segments / indexed_s, 1),
        importer_peak_mb=round(peak[0], 1),
        search_pss_mb=round(pss, 1),
        search_empty_pss_mb=round(empty_pss, 1),
        bytes_per_frame=round((pss - empty_pss) * 2**20 / max(frames, 1), 1),
        summary=summary,
    )


def _times(summary: str) -> tuple[float, float]:
    """(read and sent, all indexed) seconds from the import's summary line (echovids.audioset.ImportReport)."""
    sent = re.search(r"sent in ([\d.]+) s", summary)
    indexed = re.search(r"indexed after ([\d.]+) s", summary)
    if sent is None or indexed is None:
        raise RuntimeError(f"unexpected import summary: {summary}")
    return float(sent.group(1)), float(indexed.group(1))
