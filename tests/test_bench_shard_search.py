"""`echovids bench shard-search`: one shard of a built library searched in-process, timed."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.latency import AUDIOSET, YAMNET, Flavour, build_library
from benchmarks.shard_search import run


@pytest.mark.parametrize("flavour", [YAMNET, AUDIOSET], ids=lambda f: f.name)
def test_a_built_shard_is_searched_in_process_and_timed(tmp_path: Path, flavour: Flavour) -> None:
    """Past ScaNN's brute-force size: YAMNet's frames projected (the queries mapped back onto the axes), AudioSet's
    read at the query's hop."""
    build_library(tmp_path / "data", 24_000, 1, flavour=flavour)
    report = run(tmp_path / "data", queries=8, passes=2)
    assert report.rows == 24_000 and report.queries == 8 and report.passes == 2
    assert report.stored_dim == (257 if flavour is YAMNET else 128)
    assert 0 < report.p50_ms <= report.p90_ms and report.mean_ms > 0 and report.load_s > 0
    with pytest.raises(ValueError, match="holds no frames"):
        run(tmp_path / "data", shard=1)
