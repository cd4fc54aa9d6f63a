"""`echovids bench load` with tiny numbers: real clients against a real stack, every figure measured."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.load import LevelReport, run, saturation, table


def level(clients: int, qps: float, p95_ms: float) -> LevelReport:
    return LevelReport(
        clients, 60.0, int(qps * 60), 0, {}, qps, p95_ms / 2, p95_ms, p95_ms * 1.2, 900.0, 910.0, 600.0, 605.0, {}, {}
    )


def test_the_saturation_point_is_where_p95_first_passes_one_second() -> None:
    assert saturation([level(8, 5.0, 400), level(32, 9.0, 1400), level(64, 9.5, 3000)]) == (9.0, 5.0)
    assert saturation([level(8, 5.0, 1200)]) == (5.0, None)
    assert saturation([level(8, 5.0, 400), level(32, 7.0, 900)]) == (None, 7.0)


def test_load_runs_levels_of_clients_against_a_stack(tmp_path: Path) -> None:
    report = run(clips=200, clients=(1, 3), seconds=4.0, query_s=2.0, workdir=tmp_path, log=lambda _: None)
    assert [lv.clients for lv in report.levels] == [1, 3] and report.clips == 200
    for lv in report.levels:
        assert lv.completed >= 1 and lv.errors == 0, lv
        assert lv.seconds >= 4.0 and abs(lv.throughput_qps - lv.completed / lv.seconds) < 0.05 * lv.throughput_qps
        assert 0 < lv.p50_ms <= lv.p95_ms <= lv.p99_ms
        assert lv.rss_start_mb > 100 and lv.rss_end_mb > 100  # Redis, workers with their models, gateway
        assert 0 < lv.anon_start_mb < lv.rss_start_mb and 0 < lv.anon_end_mb < lv.rss_end_mb
        assert lv.memory_samples and all(0 < t <= lv.seconds and 0 < a < r for t, r, a, _ in lv.memory_samples)
        assert all(abs(sum(by.values()) - a) < 1 for _, _, a, by in lv.memory_samples)
        assert {"redis", "gateway", "embedder", "search", "availability", "beat"} <= set(lv.anon_by_service_end_mb)
    assert "| 3 |" in table(report)


def test_building_a_benchmark_library_leaves_the_process_settings_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library is written under its own data dir and shard count; the process keeps its own afterwards."""
    from benchmarks.latency import build_library
    from echovids.settings import get_settings

    monkeypatch.setenv("ECHOVIDS_DATA_DIR", str(tmp_path / "mine"))
    monkeypatch.delenv("ECHOVIDS_SEARCH_SHARDS", raising=False)
    get_settings.cache_clear()
    assert build_library(tmp_path / "bench", frames=400, shards=2) == 20
    assert (tmp_path / "bench" / "shards" / "1" / "segments").is_dir()
    assert os.environ["ECHOVIDS_DATA_DIR"] == str(tmp_path / "mine") and "ECHOVIDS_SEARCH_SHARDS" not in os.environ
    assert get_settings().data_dir == tmp_path / "mine"
