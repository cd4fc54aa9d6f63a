"""`echovids eval --suite synthetic --offline` on a tiny configuration: the report's shape; tonal, periodic and
noise-like sounds found exact at their moment; short sounds taken and found; outsiders never marked exact."""

from __future__ import annotations

import json
from pathlib import Path

from echovids.synthetic import KINDS
from evaluation.references import REFERENCES
from evaluation.suites import EvalConfig, run

# Every kind but the click train: a sparse train's 3 s excerpt under white noise at 10 dB of its mean level is buried
# between its clicks (docs/quality.md).
FOUND = ("pure_tone", "chirp", "am_tone", "fm_tone", "tone_mix", "shaped_noise", "hum", "beep_pattern", "hit")


def test_the_synthetic_suite_offline_reports_per_kind_and_finds_each_kind(env: Path, tmp_path: Path) -> None:
    cfg = EvalConfig(
        url="offline",
        out=tmp_path / "report",
        suites=("synthetic",),
        offline=True,
        synthetic_seed=0,
        synthetic_per_kind=2,
        synthetic_queries=2,
        synthetic_distractors=False,
        log=lambda _: None,
    )
    report = run(cfg)
    syn = report["suites"]["synthetic"]
    assert syn["seed"] == 0 and report["settings"]["synthetic_seed"] == 0
    summary = syn["summary"]
    assert set(summary) == {"exact", "bare", "context", "outside"}
    for part in ("exact", "bare", "context"):
        assert list(summary[part]["per_kind"]) == list(KINDS)
        assert set(summary[part]["all"]["references"]) == set(REFERENCES)
    assert summary["exact"]["all"]["queries"] == len(KINDS) * 2 * 2
    assert summary["bare"]["all"]["queries"] == summary["context"]["all"]["queries"] == len(KINDS) * 2
    # Refused short clips and queries (audio_too_short) are misses, counted, not errors.
    bare = summary["bare"]["all"]
    assert 0 <= bare["refused_adds"] <= bare["queries"] and 0 <= bare["refused_queries"] <= bare["queries"]
    assert bare["top1"] <= 1 - bare["refused_adds"] / bare["queries"]
    # Strangers: other-seed synthetic sounds of every kind, and ESC-10 clips (none of them is in this library).
    assert set(KINDS) | {"esc10"} == set(summary["outside"]["per_kind"])
    assert summary["outside"]["all"]["any_exact"] is not None
    for kind in FOUND:
        row = summary["exact"]["per_kind"][kind]
        assert row["top1_on_time"] >= 0.75 and row["top1_exact"] >= 0.75, (kind, row)
    # Short sounds (0.25-0.9 s) are taken as clips and as queries, and found as themselves.
    assert bare["refused_adds"] == bare["refused_queries"] == 0 and bare["top1"] >= 0.75, bare
    assert summary["outside"]["all"]["any_exact"] <= 0.05, summary["outside"]["all"]
    saved = json.loads((cfg.out / "report.json").read_text())
    assert saved["suites"]["synthetic"]["summary"]["exact"]["all"] == summary["exact"]["all"]
    text = (cfg.out / "report.md").read_text()
    assert "## Synthetic sounds (seed 0)" in text and "| shaped_noise |" in text and "Wrongly exact" in text
