"""The whole query path: ingest through the CLI, search through the HTTP API, real workers and models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from echovids.harness import Stack, write_wav
from tests.sounds import SR, mix_at_snr, synthetic_library

QUERIES = 6


@pytest.fixture(scope="session")
def library_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("library")
    for i, sound in enumerate(synthetic_library(20)):
        write_wav(folder / f"sound_{i:02d}.wav", sound)
    return folder


@pytest.fixture(scope="session")
def ingested(stack: Stack, library_dir: Path) -> Stack:
    done = stack.cli("ingest", str(library_dir))
    assert done.returncode == 0, done.stderr + done.stdout
    assert "ingested 20 of 20 files" in done.stdout
    return stack


def test_excerpt_with_noise_finds_source_and_offset(ingested: Stack, library_dir: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    sounds = synthetic_library(20)
    for q in range(QUERIES):
        source = int(rng.integers(20))
        offset = float(rng.uniform(0, 8.0 - 3.0))
        excerpt = sounds[source][int(offset * SR) : int(offset * SR) + 3 * SR]
        query = write_wav(tmp_path / f"query_{q}.wav", mix_at_snr(excerpt, rng.standard_normal(excerpt.size), 10))
        job = ingested.search(query, k=5)
        assert job["status"] == "done", job
        top = job["results"][0]
        summary = [(r["title"], r["match"], r["score"], r["match_start_s"]) for r in job["results"]]
        assert top["title"] == f"sound_{source:02d}", (source, offset, summary)
        # The query's moment query_start_s sits at match_start_s in the clip: their difference is the offset.
        assert abs(top["match_start_s"] - top["query_start_s"] - offset) <= 0.5, (offset, top)
        assert top["source"]["file_name"] == f"sound_{source:02d}.wav"
        assert top["available"] is True
        assert top["labels"]
        # YAMNet's classes are AudioSet's: each name comes with its ontology id, in the same order.
        assert len(top["label_ids"]) == len(top["labels"]) and all(i.startswith("/") for i in top["label_ids"])


def test_search_cli_prints_a_table(ingested: Stack, library_dir: Path) -> None:
    shown = ingested.cli("search", str(library_dir / "sound_03.wav"), "--k", "3", "--url", ingested.url)
    assert shown.returncode == 0, shown.stderr
    first_row = next(line for line in shown.stdout.splitlines() if line.startswith("│ 1 "))
    assert "sound_03" in first_row
    assert "exact" in first_row  # the very recording: the landmark index recognises it
