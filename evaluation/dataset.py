"""ESC-10 clips and the long recordings joined from them, with their ground truth.

A recording is ``clips_per_recording`` clips of exactly ``clip_s`` seconds laid end to end (60 s of 12 clips by
default), the clips shuffled so that each recording mixes classes. The ground truth says which clip, of which class,
sits at which seconds of which recording.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from echovids.audio import decode_file
from echovids.audio_params import SAMPLE_RATE

DEFAULT_ESC10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "esc10"


@dataclass(frozen=True)
class Clip:
    name: str  # file stem, e.g. esc10_dog_bark_1-100032-A: the title it gets in the library
    label: str
    fold: int
    path: Path


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float
    clip: str
    label: str


@dataclass
class Recording:
    name: str
    segments: list[Segment]
    waveform: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, dtype=np.float32))

    @property
    def duration_s(self) -> float:
        return self.segments[-1].end_s if self.segments else 0.0

    def labels_at(self, t: float, tolerance_s: float = 0.0) -> set[str]:
        """Classes of the segments that contain time ``t`` (each segment widened by ``tolerance_s``)."""
        return {s.label for s in self.segments if s.start_s - tolerance_s <= t <= s.end_s + tolerance_s}

    def has_label(self, label: str) -> bool:
        return any(s.label == label for s in self.segments)

    def truth(self) -> dict:
        return {"name": self.name, "duration_s": self.duration_s, "segments": [asdict(s) for s in self.segments]}


def fold_of(file_name: str) -> int:
    """ESC file names start with their fold digit (``1-100032-A.ogg``); ours carry a class prefix too."""
    stem = Path(file_name).name
    core = stem.rsplit("_", 1)[-1] if "_" in stem else stem
    return int(core[0])


def load_clips(root: Path = DEFAULT_ESC10) -> list[Clip]:
    """Every clip of labels.csv (or labels_full.csv), sorted by name."""
    table = root / "labels_full.csv"
    if not table.exists():
        table = root / "labels.csv"
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    clips = []
    for row in rows:
        name = row["filename"]
        fold = int(row["fold"]) if row.get("fold") else fold_of(name)
        clips.append(Clip(name=Path(name).stem, label=row["label"], fold=fold, path=root / "audio" / name))
    return sorted(clips, key=lambda c: c.name)


def fit(samples: np.ndarray, seconds: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Exactly ``seconds`` long: trimmed, or padded with silence."""
    n = round(seconds * sr)
    out = np.zeros(n, dtype=np.float32)
    out[: min(n, samples.size)] = samples[:n]
    return out


def load_waveform(clip: Clip, seconds: float) -> np.ndarray:
    return fit(decode_file(clip.path), seconds)


def join_recordings(
    clips: list[Clip],
    waveforms: dict[str, np.ndarray] | None,
    clips_per_recording: int = 12,
    clip_s: float = 5.0,
    seed: int = 0,
    prefix: str = "esc10rec",
    sr: int = SAMPLE_RATE,
) -> tuple[list[Recording], list[Clip]]:
    """Shuffle the clips (seeded) into recordings of ``clips_per_recording``; returns them and the clips left over.

    ``waveforms`` maps clip name to audio of exactly ``clip_s`` s; None builds the ground truth only.
    """
    order = np.random.default_rng(seed).permutation(len(clips))
    shuffled = [clips[i] for i in order]
    count = len(shuffled) // clips_per_recording
    recordings = []
    for r in range(count):
        members = shuffled[r * clips_per_recording : (r + 1) * clips_per_recording]
        segments = [
            Segment(start_s=i * clip_s, end_s=(i + 1) * clip_s, clip=c.name, label=c.label)
            for i, c in enumerate(members)
        ]
        recording = Recording(name=f"{prefix}{r:02d}", segments=segments)
        if waveforms is not None:
            recording.waveform = np.concatenate([fit(waveforms[c.name], clip_s, sr) for c in members])
        recordings.append(recording)
    return recordings, shuffled[count * clips_per_recording :]
