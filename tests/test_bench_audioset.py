"""`echovids bench audioset` with tiny numbers: a synthetic release in the released format, really imported."""

from __future__ import annotations

from pathlib import Path

from benchmarks.audioset_import import RECORDS_PER_FILE, run, write_release, youtube_id
from echovids.audioset import parse_sequence_example, read_segments, tfrecords


def test_the_synthetic_release_reads_as_audioset(tmp_path: Path) -> None:
    csv_path, folder = write_release(tmp_path, RECORDS_PER_FILE + 5)
    segments, bad = read_segments(csv_path)
    assert len(segments) == RECORDS_PER_FILE + 5 and not bad
    files = sorted(folder.glob("*.tfrecord"))
    assert len(files) == 2
    records = [parse_sequence_example(r) for f in files for r in tfrecords(f)]  # type: ignore[arg-type]
    assert len(records) == RECORDS_PER_FILE + 5
    assert records[0].video_id == youtube_id(0) and records[0].features.shape == (10, 128)
    assert len({youtube_id(i) for i in range(10_000)}) == 10_000


def test_the_import_bench_imports_and_indexes_every_segment(tmp_path: Path) -> None:
    report = run(segments=300, workdir=tmp_path, log=lambda _: None)
    assert report.segments == 300 and report.frames == 3000  # one per feature, at AudioSet's 0.96 s
    assert 0 < report.submit_s <= report.indexed_s and report.indexed_rate > 0
    assert report.importer_peak_mb > 50 and report.search_empty_pss_mb > 50
    growth = (report.search_pss_mb - report.search_empty_pss_mb) * 2**20 / 3000  # of the figures rounded to 0.1 MB
    assert report.bytes_per_frame > 0 and abs(report.bytes_per_frame - growth) < 0.1 * 2**20 / 3000
    assert "imported 300 AudioSet clips" in report.summary
