"""`echovids bench clip-memory` with short files: a real model, a fresh process per clip, memory from the kernel."""

from __future__ import annotations

from pathlib import Path

from benchmarks.clip_memory import run
from echovids.framing import frame_count


def test_clip_memory_measures_each_length_in_its_own_process(tmp_path: Path) -> None:
    short, long = run([1.5, 4.0], tmp_path)
    for row in (short, long):
        assert row["frames"] == frame_count(int(row["minutes"] * 60 * 16_000))
        assert 0 < row["model_loaded_rss_mb"] <= row["peak_rss_mb"]
    # Streamed: 2.7 times the audio costs no more than its few MB of vectors and landmarks (whole, it was +70 MB).
    assert long["peak_rss_mb"] - short["peak_rss_mb"] < 30, (short, long)
