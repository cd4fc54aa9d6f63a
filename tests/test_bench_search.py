"""`echovids bench search` on a tiny synthetic set: the report's shape and sane recall values."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ beside the package

pytest.importorskip("scann")
search = pytest.importorskip("benchmarks.search")


def test_tiny_benchmark_report() -> None:
    methods = ["exact", "scann"]
    for module, name in (("faiss", "faiss-ivfpq"), ("faiss", "faiss-hnsw"), ("hnswlib", "hnswlib")):
        try:
            __import__(module)
            methods.append(name)
        except ImportError:
            pass
    config = search.BenchConfig(
        n=5000,
        dims=(64,),
        queries=50,
        single_queries=20,
        repeats=1,
        threads=1,
        methods=tuple(methods),
        source="synthetic",
        hnsw_budget_s=60.0,
        scann_variants=("production", "brute-force"),
    )
    report = search.run(config, log=lambda _: None)

    assert report.dataset["n"] == 5000 and report.dataset["queries"] == 50
    assert {"nproc", "cpu"} <= set(report.machine)
    assert {r.method for r in report.rows} >= {"exact", "scann (production)", "scann (brute-force)"}
    for row in report.rows:
        assert row.dim == 64
        assert row.recall is not None and 0.0 <= row.recall <= 1.0
        assert row.qps_single and row.qps_single > 0 and row.qps_batched and row.qps_batched > 0
    exact = next(r for r in report.rows if r.method == "exact")
    assert exact.recall == 1.0
    brute = next(r for r in report.rows if r.method == "scann (brute-force)")
    assert brute.recall > 0.99
    assert all(0.0 <= s["recall"] <= 1.0 for s in report.summary)
    table = search.to_markdown(report)
    assert table.startswith("| dim | method |") and "exact" in table


def test_synthetic_vectors_are_unit_and_clustered() -> None:
    base, queries = search.synthetic_vectors(4000, 20, dim=128, seed=1)
    assert base.shape == (4000, 128) and queries.shape == (20, 128)
    assert np.allclose(np.linalg.norm(base, axis=1), 1.0, atol=1e-4)
    top = np.sort(queries @ base.T, axis=1)[:, -1]
    assert top.mean() > 0.5  # neighbours exist: the set is clustered, not isotropic noise
    truth = search.exact_topk(base, queries, 10)
    assert search.recall_at_k(truth, truth) == 1.0
