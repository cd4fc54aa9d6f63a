"""`echovids bench hops` with tiny numbers against this checkout: every figure counted, none invented."""

from __future__ import annotations

from pathlib import Path

from benchmarks.hops import ROOT, run
from echovids.harness import write_wav
from tests.sounds import synthetic_library


def test_hops_counts_a_searchs_commands_and_tasks(tmp_path: Path) -> None:
    library = tmp_path / "library"
    library.mkdir()
    for i, sound in enumerate(synthetic_library(count=2, seconds=4.0)):
        write_wav(library / f"sound_{i}.wav", sound)
    report = run(
        sources=[ROOT],
        files=2,
        searches=3,
        clients=2,
        per_client=1,
        idle_s=2,
        drain_s=0,
        warmup=1,
        library=library,
        workdir=tmp_path / "work",
        log=lambda _: None,
    )
    figures = report.sources[str(ROOT)]
    # Each search publishes at least its embedding and one shard task, and reads and writes its job in Redis.
    assert figures.tasks_by_name.get("echovids.embedder.embed_query") == 1.0
    assert figures.tasks_per_search >= 2
    assert figures.redis_per_search > 10
    assert figures.redis_by_command.get("lpush", 0) >= 2
    assert figures.concurrent_searches == 2 and 0 < figures.p50_ms <= figures.p95_ms
