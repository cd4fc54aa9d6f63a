"""`echovids bench landmarks` with tiny numbers: each family counted from real audio, the index as large as asked."""

from __future__ import annotations

import pytest

from benchmarks.landmarks import run


def test_landmarks_bench_counts_each_family_and_builds_the_index_it_reports() -> None:
    report = run(hours=0.2, queries=5)
    assert report.audio_s_extracted == pytest.approx(600.0, abs=1.0)  # 120 ESC-10 clips of 5 s
    families = report.family_per_audio_s
    assert set(families) == {"peak", "steady", "fine_steady", "onset"} and all(v > 0 for v in families.values())
    # Every hash is of one family: the families add up to the whole rate (each rounded to 0.1).
    assert sum(families.values()) == pytest.approx(report.hashes_per_audio_s, abs=0.3)
    # The index holds the hours asked for at the measured rate (the report's rate is rounded).
    assert report.postings == pytest.approx(0.2 * 3600 * report.hashes_per_audio_s, rel=1e-3)
    assert report.extract_x_realtime > 1 and report.query_extract_ms > 0
    assert 0 < report.query_p50_ms <= report.query_p95_ms
