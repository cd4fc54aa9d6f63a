"""Search by description measured offline on ESC-10: typed descriptions -> AudioSet classes -> ranked clips.

``python -m benchmarks.text [--scores /tmp/esc10_scores.npz] [--json out.json]``

YAMNet's per-frame class scores of the 400 clips are computed once (benchmarks/esc10_scores.py) and stored the
way the index stores them (echovids/class_scores.py: each frame's top classes, 8-bit scores). Each ESC-10
class has three descriptions (evaluation/text_queries.json), mapped to class weights by
echovids.text_classes. Figures:

* P@10: each description ranks the clips of the evaluated folds by their best stretch; the share of the top 10
  of the description's class (chance: 0.1);
* zero-shot accuracy: each clip goes to the class whose descriptions (the mean of their weight vectors) score
  it highest; "standardised": each class's clip scores first made z-scores over the evaluated clips, so that a
  class whose AudioSet classes YAMNet scores low everywhere (helicopter: "Vehicle" more than "Helicopter") still
  wins the clips where it stands out;
* moment: for the description's correct clips in its top 10, whether the frame the answer points at has one of
  the class's own AudioSet classes (the data file's ``classes``) among YAMNet's top 3 for that frame; beside it
  the same rate for a frame drawn at random from the same clip, which says what the choice adds;
* held-out: descriptions of sounds ESC-10 does not have; whether the mapping's first class is one expected.

The constants (how a class is put into words, how many classes a text keeps, the softmax temperature, the
stretch) are chosen on folds 1-3 and reported on folds 4-5, then the other way round, so the figures are out of
sample; the same grid's figures over all five folds follow for the library defaults.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np

from benchmarks import esc10_scores
from echovids import class_scores
from echovids.text_classes import (
    DEFAULT_CLASS_TEXT,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_CLASSES,
    ClassMapper,
    ClassText,
    UniversalSentenceEncoder,
    load_classes,
    sparse_softmax,
)

QUERIES = Path(__file__).resolve().parents[1] / "evaluation" / "text_queries.json"
DEFAULT_ESC10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "esc10"
DEFAULT_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
DEFAULT_ONTOLOGY = Path(__file__).resolve().parents[2] / "shared" / "data" / "audioset_ontology.json"
K = 10
DEFAULT_STRETCH = class_scores.DEFAULT_STRETCH

GRID_HOW: tuple[ClassText, ...] = get_args(ClassText)
GRID_TOP = (1, 3, 5, 10, 20)
GRID_TEMPERATURE = (0.02, 0.05, 0.1, 0.2, 1.0)
GRID_STRETCH = (1, 2, 3, 4, 6)


@dataclass(frozen=True)
class Constants:
    how: ClassText
    top: int
    temperature: float
    stretch: int


@dataclass(frozen=True)
class Figures:
    p_at_10: float
    zero_shot: float
    zero_shot_standardised: float
    moment: float
    moment_random_frame: float
    clips: int


class Bench:
    """Everything computed once: frame scores (compact), query texts' similarities to the classes per class text."""

    def __init__(self, scores: esc10_scores.ClipScores, mappers: Mapping[str, ClassMapper], queries: dict) -> None:
        self.scores = scores
        self.compact = class_scores.encode(scores.scores)
        self.labels = np.array(scores.labels)
        self.classes = sorted(queries["esc10"])
        self.query_text: list[str] = []
        self.query_label: list[str] = []
        for label in self.classes:
            for text in queries["esc10"][label]["queries"]:
                self.query_text.append(text)
                self.query_label.append(label)
        mapper = next(iter(mappers.values()))
        index_of = {cls.name: cls.index for cls in mapper.classes}
        self.truth = {label: [index_of[n] for n in queries["esc10"][label]["classes"]] for label in self.classes}
        self.n_classes = len(mapper.classes)
        self.similarities = {how: m.similarities(self.query_text) for how, m in mappers.items()}
        top3 = np.argsort(-scores.scores, axis=1)[:, :3]
        self.frame_top3 = top3

    def weights(self, how: str, top: int, temperature: float) -> np.ndarray:
        """[queries, classes] weight vectors."""
        out = np.zeros((len(self.query_text), self.n_classes), dtype=np.float32)
        for q, row in enumerate(self.similarities[how]):
            for i, w in sparse_softmax(row, top, temperature):
                out[q, i] = w
        return out

    def clip_scores(self, weights: np.ndarray, stretch: int) -> tuple[np.ndarray, np.ndarray]:
        """[vectors, clips] best-stretch scores and start frames."""
        scores, starts = [], []
        for w in weights:
            s, b = class_scores.best_stretches(class_scores.frame_scores(self.compact, w), self.scores.offsets, stretch)
            scores.append(s)
            starts.append(b)
        return np.array(scores), np.array(starts)

    def figures(self, c: Constants, folds: tuple[int, ...], seed: int = 0) -> Figures:
        inside = np.isin(self.scores.folds, folds)
        clips = np.flatnonzero(inside)
        weights = self.weights(c.how, c.top, c.temperature)
        per_query, starts = self.clip_scores(weights, c.stretch)
        precision, moments, random_moments = [], [], []
        rng = np.random.default_rng(seed)
        for q, label in enumerate(self.query_label):
            ranked = clips[class_scores.rank(per_query[q, clips], K)]
            correct = ranked[self.labels[ranked] == label]
            precision.append(correct.size / K)
            truth = self.truth[label]
            for clip in correct:
                first = int(self.scores.offsets[clip])
                frames = int(self.scores.offsets[clip + 1]) - first
                chosen = first + int(starts[q, clip])
                drawn = first + int(rng.integers(frames))
                moments.append(bool(np.isin(self.frame_top3[chosen], truth).any()))
                random_moments.append(bool(np.isin(self.frame_top3[drawn], truth).any()))
        # Zero-shot: one vector per class, the mean of its descriptions' weights.
        per_class = np.array(
            [weights[[q for q, lab in enumerate(self.query_label) if lab == label]].mean(0) for label in self.classes]
        )
        class_clip, _ = self.clip_scores(per_class, c.stretch)
        raw = class_clip[:, clips]
        guessed = np.array(self.classes)[np.argmax(raw, axis=0)]
        standard = (raw - raw.mean(axis=1, keepdims=True)) / np.maximum(raw.std(axis=1, keepdims=True), 1e-9)
        guessed_standard = np.array(self.classes)[np.argmax(standard, axis=0)]
        return Figures(
            p_at_10=float(np.mean(precision)),
            zero_shot=float(np.mean(guessed == self.labels[clips])),
            zero_shot_standardised=float(np.mean(guessed_standard == self.labels[clips])),
            moment=float(np.mean(moments)) if moments else 0.0,
            moment_random_frame=float(np.mean(random_moments)) if random_moments else 0.0,
            clips=int(clips.size),
        )


def objective(f: Figures) -> float:
    return f.p_at_10 + f.zero_shot + f.zero_shot_standardised


def grid() -> list[Constants]:
    return [Constants(*c) for c in itertools.product(GRID_HOW, GRID_TOP, GRID_TEMPERATURE, GRID_STRETCH)]


def tune(bench: Bench, folds: tuple[int, ...]) -> tuple[Constants, Figures]:
    scored = [(objective(f), c, f) for c in grid() for f in [bench.figures(c, folds)]]
    best = max(scored, key=lambda item: item[0])
    return best[1], best[2]


def held_out(mapper: ClassMapper, queries: dict) -> list[dict[str, Any]]:
    rows = []
    for item, mapped in zip(queries["held_out"], mapper.map_many([h["text"] for h in queries["held_out"]])):
        rows.append(
            {
                "text": item["text"],
                "classes": [(w.name, round(w.weight, 2)) for w in mapped],
                "first_expected": mapped[0].name in item["expect"],
                "any_expected": any(w.name in item["expect"] for w in mapped[:3]),
            }
        )
    return rows


def run(scores_path: Path, esc10_dir: Path, model_dir: Path, ontology: Path) -> dict[str, Any]:
    started = time.perf_counter()
    scores = esc10_scores.cached(esc10_dir, model_dir, scores_path)
    queries = json.loads(QUERIES.read_text())
    classes = load_classes(model_dir / "yamnet_class_map.csv", ontology)
    encoder = UniversalSentenceEncoder()
    mappers: dict[str, ClassMapper] = {how: ClassMapper(encoder, classes, how=how) for how in GRID_HOW}
    bench = Bench(scores, mappers, queries)
    splits = {"folds 1-3 -> 4-5": ((1, 2, 3), (4, 5)), "folds 4-5 -> 1-3": ((4, 5), (1, 2, 3))}
    out: dict[str, Any] = {"out_of_sample": {}}
    for name, (tune_folds, test_folds) in splits.items():
        constants, tuned = tune(bench, tune_folds)
        out["out_of_sample"][name] = {
            "constants": asdict(constants),
            "in_sample": asdict(tuned),
            "out_of_sample": asdict(bench.figures(constants, test_folds)),
        }
    defaults = Constants(DEFAULT_CLASS_TEXT, DEFAULT_TOP_CLASSES, DEFAULT_TEMPERATURE, DEFAULT_STRETCH)
    everything = (1, 2, 3, 4, 5)
    out["defaults"] = {"constants": asdict(defaults), "all_folds": asdict(bench.figures(defaults, everything))}
    out["by_class_text"] = {
        how: asdict(bench.figures(Constants(how, defaults.top, defaults.temperature, defaults.stretch), everything))
        for how in GRID_HOW
    }
    dense = class_scores.CompactScores(*_dense_as_compact(scores.scores))
    full_bench = _with_compact(bench, dense)
    oracle = _oracle_weights(bench)
    out["oracle_classes_all_folds"] = asdict(_with_weights(bench, oracle).figures(defaults, everything))
    out["full_scores_defaults"] = asdict(full_bench.figures(defaults, everything))
    out["bytes_per_frame"] = bench.compact.nbytes / len(bench.compact)
    out["held_out"] = held_out(mappers[DEFAULT_CLASS_TEXT], queries)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def _dense_as_compact(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All 521 classes kept (for the compact form's cost); levels still 8-bit."""
    return class_scores.encode(scores, top=scores.shape[1]).ids, class_scores.encode(scores, top=scores.shape[1]).levels


def _with_compact(bench: Bench, compact: class_scores.CompactScores) -> Bench:
    clone = object.__new__(Bench)
    clone.__dict__.update(bench.__dict__)
    clone.compact = compact
    return clone


def _oracle_weights(bench: Bench) -> np.ndarray:
    """Each description replaced by its class's hand-picked AudioSet classes, equally weighted: what the mapping
    would score if it read every text perfectly (a ceiling set by YAMNet's scores, not by the text model)."""
    weights = np.zeros((len(bench.query_text), bench.n_classes), dtype=np.float32)
    for q, label in enumerate(bench.query_label):
        weights[q, bench.truth[label]] = 1 / len(bench.truth[label])
    return weights


def _with_weights(bench: Bench, weights: np.ndarray) -> Bench:
    clone = object.__new__(Bench)
    clone.__dict__.update(bench.__dict__)
    clone.weights = lambda how, top, temperature: weights  # type: ignore[method-assign]
    return clone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scores", type=Path, default=Path("/tmp/esc10_scores.npz"))
    parser.add_argument("--esc10", type=Path, default=DEFAULT_ESC10)
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    parser.add_argument("--ontology", type=Path, default=DEFAULT_ONTOLOGY)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    out = run(args.scores, args.esc10, args.models, args.ontology)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
