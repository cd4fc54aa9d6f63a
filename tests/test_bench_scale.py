"""`echovids bench scale` with tiny numbers: a real stack on a real (synthetic) library, every figure measured."""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.scale import run


def test_scale_measures_memory_recall_start_and_latency_of_two_search_processes(tmp_path: Path) -> None:
    report = run(frames=2000, processes=2, queries=5, workdir=tmp_path, log=lambda _: None)
    assert report.frames == 2000 and report.search_processes == 2 and report.dim == 1024
    assert report.recall_at_10 >= 0.99  # a small shard is searched exactly
    assert report.rss_mb > report.empty_rss_mb > 100  # two pool processes and their worker, each a Python
    assert math.isfinite(report.bytes_per_frame)
    assert report.load_s > 0 and 0 < report.p50_ms <= report.p95_ms
    # Both search processes logged their load: the start is timed to the later one.
    assert (tmp_path / "serve.log").read_text().count("shards [0] loaded in") == 2
