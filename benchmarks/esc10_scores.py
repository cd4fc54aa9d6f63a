"""YAMNet's per-frame AudioSet class scores for every ESC-10 clip, computed once and cached in an .npz.

The text-search measurement (benchmarks/text.py) ranks clips by these scores; computing them is the slow part
(400 clips of 5 s through YAMNet, a few minutes on two cores), so it is done once and kept. The frames are the
embedder's own (echovids.framing), scored by the embedder's YAMNet (services/embedder/models/yamnet.py), so the
figures are those the system would give.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echovids.audio import decode_file
from echovids.framing import frame_loudness_db, frame_waveform


@dataclass(frozen=True)
class ClipScores:
    """Per-frame class scores of a set of clips, concatenated; clip i's frames are ``offsets[i]:offsets[i+1]``."""

    filenames: list[str]
    labels: list[str]
    folds: np.ndarray  # int, one per clip
    offsets: np.ndarray  # int, len(clips) + 1
    scores: np.ndarray  # float32 [frames, 521]
    loudness_db: np.ndarray  # float32 [frames], the embedder's silence measure

    def clip(self, i: int) -> np.ndarray:
        return self.scores[self.offsets[i] : self.offsets[i + 1]]


def read_esc10(esc10_dir: Path) -> list[tuple[str, str, int]]:
    """(filename, label, fold) for every clip of the set, in the labels file's order."""
    with (esc10_dir / "labels_full.csv").open() as f:
        return [(row["filename"], row["label"], int(row["fold"])) for row in csv.DictReader(f)]


def compute(esc10_dir: Path, model_dir: Path) -> ClipScores:
    from services.embedder.models.yamnet import YamnetTflite

    model = YamnetTflite(model_dir, threads=1)
    rows = read_esc10(esc10_dir)
    parts: list[np.ndarray] = []
    loudness: list[np.ndarray] = []
    offsets = [0]
    started = time.perf_counter()
    for n, (filename, _, _) in enumerate(rows, 1):
        waveform = decode_file(esc10_dir / "audio" / filename)
        frames = frame_waveform(waveform)
        embedded = model.embed(frames)
        assert embedded.scores is not None
        parts.append(embedded.scores.astype(np.float32))
        loudness.append(frame_loudness_db(waveform).astype(np.float32)[: len(frames)])
        offsets.append(offsets[-1] + len(frames))
        if n % 50 == 0:
            print(f"{n}/{len(rows)} clips, {time.perf_counter() - started:.0f} s", flush=True)
    return ClipScores(
        filenames=[r[0] for r in rows],
        labels=[r[1] for r in rows],
        folds=np.array([r[2] for r in rows]),
        offsets=np.array(offsets),
        scores=np.concatenate(parts),
        loudness_db=np.concatenate(loudness),
    )


def save(scores: ClipScores, path: Path) -> None:
    np.savez_compressed(
        path,
        filenames=np.array(scores.filenames),
        labels=np.array(scores.labels),
        folds=scores.folds,
        offsets=scores.offsets,
        scores=scores.scores,
        loudness_db=scores.loudness_db,
    )


def load(path: Path) -> ClipScores:
    with np.load(path) as data:
        return ClipScores(
            filenames=[str(x) for x in data["filenames"]],
            labels=[str(x) for x in data["labels"]],
            folds=data["folds"],
            offsets=data["offsets"],
            scores=data["scores"],
            loudness_db=data["loudness_db"],
        )


def cached(esc10_dir: Path, model_dir: Path, path: Path) -> ClipScores:
    """The cached scores at ``path``, computed and written there first when absent."""
    if not path.exists():
        save(compute(esc10_dir, model_dir), path)
    return load(path)
