"""Similar sounds out of sample: the re-scoring's constants chosen on some ESC-10 folds, reported on the others.

Both ways round (tune on folds 1-3, report on 4-5; tune on 4-5, report on 1-3). Each side is a library of its
own folds' clips, every clip a query against the others (itself left out of its list), so nothing of the report
folds is seen while the constants are chosen. On the tuning folds each constant of :class:`Rescoring` is swept
in turn (the others held at the best so far); the best setting and the shipped one are then reported on the
held-out folds beside the two references (``evaluation.references``), in the same run. A second check that no
constant was tuned on: the synthetic sounds (``echovids.synthetic``), similar meaning the same kind.

Noise: a 95 % interval of each difference, by bootstrap over the queries' source recordings (ESC-50 cuts several
clips from one recording and keeps them in one fold; they are not independent queries).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from echovids.audio import decode_bytes
from echovids.settings import get_settings
from evaluation import metrics, references
from services.search.matching import RESCORING, Rescoring
from services.search.query import rank_key, search_shard
from services.search.shard import ShardIndex

SPLITS = (((1, 2, 3), (4, 5)), ((4, 5), (1, 2, 3)))
SWEEP: dict[str, tuple] = {
    "centre_weight": (0.0, 0.25, 0.5, 0.75, 1.0),
    "expansion": (0, 3, 5, 10),
    "fit_weight": (0.0, 0.05, 0.15, 0.3),
    "mean_weight": (0.0, 0.25, 0.5, 1.0),
}
BOOTSTRAP = 2000
K = 10


@dataclasses.dataclass
class Item:
    """One sound: its name (a library title), its class (or kind), its group (queries of one group are not
    independent: one source recording), and the arrays of it as library clip and as query."""

    name: str
    label: str
    group: str
    library: dict[str, np.ndarray]
    query: dict[str, np.ndarray]


def embed(named: Sequence[tuple[str, str, str, np.ndarray]], log: Callable[[str], None] = print) -> list[Item]:
    """(name, label, group, waveform) -> items, embedded by the service's own code."""
    from services.embedder.factory import get_model
    from services.embedder.tasks import clip_arrays, query_arrays

    model = get_model()
    items = []
    for i, (name, label, group, waveform) in enumerate(named):
        library, _ = clip_arrays(model, waveform)
        items.append(Item(name, label, group, library, query_arrays(model, waveform)))
        if (i + 1) % 100 == 0:
            log(f"  embedded {i + 1} of {len(named)}")
    return items


def esc10_items(root: Path, log: Callable[[str], None] = print) -> tuple[list[Item], dict[str, int]]:
    """The ESC-10 clips as items, and each one's fold."""
    from evaluation.dataset import load_clips

    clips = load_clips(root)
    named = [
        (c.name, c.label, c.name.rsplit("_", 1)[-1].rsplit("-", 1)[0], decode_bytes(c.path.read_bytes())) for c in clips
    ]
    return embed(named, log), {c.name: c.fold for c in clips}


def library(folder: Path, items: Sequence[Item], space: str) -> ShardIndex:
    shutil.rmtree(folder, ignore_errors=True)
    index = ShardIndex(folder, 0)
    for item in items:
        index.write_segment(item.name, item.library, space)
        index.add_segment(item.name)
    if index.delta_rows > get_settings().search_delta_max:  # sealed as a search process seals its delta
        index.compact()
    return index


def precisions(
    index: ShardIndex, space: str, items: Sequence[Item], method: str, rescoring: Rescoring = RESCORING
) -> np.ndarray:
    """P@10 of every item as a query against the library (itself left out of its list)."""
    label_of = {it.name: it.label for it in items}
    out = []
    for item in items:
        if method == "system":
            found = search_shard(index, space, item.query, limit=max(2 * K, 100), k=K + 1, rescoring=rescoring)
            titles = [c.clip_id for c in sorted(found, key=rank_key)]
        else:
            titles = [r.title for r in references.rank(method, index.view(), item.query["vectors"], K + 1)]
        relevant = [label_of[t] == item.label for t in titles if t != item.name]
        out.append(metrics.precision_at_k(relevant, K))
    return np.array(out)


def interval(values: np.ndarray, groups: Sequence[str], seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of the mean of ``values``, resampling whole groups."""
    names = sorted(set(groups))
    members = [np.flatnonzero(np.array(groups) == g) for g in names]
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(BOOTSTRAP):
        picked = np.concatenate([members[i] for i in rng.integers(len(members), size=len(members))])
        means.append(values[picked].mean())
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def sweep(
    index: ShardIndex, space: str, items: Sequence[Item], log: Callable[[str], None] = print
) -> tuple[Rescoring, list[dict]]:
    """Each constant in turn over its grid, the others at the best so far; returns the best and every trial."""
    best, trials = RESCORING, []
    best_p = float(precisions(index, space, items, "system", best).mean())
    for name, grid in SWEEP.items():
        for value in grid:
            trial = dataclasses.replace(best, **{name: value})
            if trial == best:
                continue
            p = float(precisions(index, space, items, "system", trial).mean())
            trials.append({"constant": name, "value": value, "p@10": p})
            log(f"    {name}={value}: P@10 {p:.3f}")
            if p > best_p + 1e-9:
                best, best_p = trial, p
    return best, trials


def compare(
    index: ShardIndex,
    space: str,
    items: Sequence[Item],
    settings: dict[str, Rescoring],
    log: Callable[[str], None] = print,
) -> dict[str, dict]:
    """The system at each setting and both references on one library, with each one's difference to clip mean."""
    groups = [it.group for it in items]
    per = {f"system ({name})": precisions(index, space, items, "system", r) for name, r in settings.items()}
    per.update({m: precisions(index, space, items, m) for m in references.REFERENCES})
    base = per["clip mean"]
    rows = {}
    for method, values in per.items():
        low, high = interval(values - base, groups)
        rows[method] = {
            "p@10": float(values.mean()),
            "vs_clip_mean": float((values - base).mean()),
            "vs_clip_mean_95": [low, high],
        }
        log(
            f"    {method}: P@10 {values.mean():.3f}, minus clip mean {(values - base).mean():+.3f} "
            f"[{low:+.3f}, {high:+.3f}]"
        )
    return rows


def run(root: Path, folder: Path, synthetic_seed: int, log: Callable[[str], None] = print) -> dict:
    from services.embedder.factory import get_model

    space = get_model().space.key
    log("folds: embedding the 400 ESC-10 clips")
    items, fold_of = esc10_items(root, log)
    report: dict = {"splits": [], "shipped": dataclasses.asdict(RESCORING)}
    chosen: dict[str, Rescoring] = {"shipped": RESCORING}
    for tune, held in SPLITS:
        mine = [it for it in items if fold_of[it.name] in tune]
        theirs = [it for it in items if fold_of[it.name] in held]
        log(f"folds: sweeping on folds {tune} ({len(mine)} clips)")
        best, trials = sweep(library(folder / "tune", mine, space), space, mine, log)
        name = "tuned on " + "".join(map(str, tune))
        chosen[name] = best
        log(f"folds: reporting on folds {held} ({len(theirs)} clips) with {best}")
        index = library(folder / "report", theirs, space)
        report["splits"].append(
            {
                "tune_folds": list(tune),
                "report_folds": list(held),
                "chosen": dataclasses.asdict(best),
                "trials": trials,
                "report": compare(index, space, theirs, {"shipped": RESCORING, "tuned": best}, log),
            }
        )
    log("folds: all 400 clips (in sample: the shipped constants were chosen on them)")
    report["all_esc10"] = compare(library(folder / "all", items, space), space, items, chosen, log)
    report["synthetic"] = synthetic(folder / "synthetic", space, synthetic_seed, chosen, log)
    return report


def synthetic(
    folder: Path, space: str, seed: int, settings: dict[str, Rescoring], log: Callable[[str], None] = print
) -> dict:
    """The seeded synthetic sounds, 12 long ones of each kind; similar = the same kind. No constant saw them."""
    from echovids import synthetic as synth

    sounds = synth.make_suite(seed, 12)
    log(f"folds: {len(sounds)} synthetic sounds (seed {seed})")
    items = embed([(s.name, s.kind, s.name, s.waveform) for s in sounds], log)
    return {
        "seed": seed,
        "sounds": len(sounds),
        "report": compare(library(folder, items, space), space, items, settings),
    }
