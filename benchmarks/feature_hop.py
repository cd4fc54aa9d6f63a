"""AudioSet's features at their own 0.96 s hop against the old import's copy doubled to 0.48 s, same queries.

Real AudioSet features exist only every 0.96 s, so the queries' truth is synthetic: each clip is a sound whose
frames every 0.48 s wander smoothly about the clip's centre (``benchmarks/sound_space.py``, an AR(1) walk);
the library holds its even frames, as the release does. Two shards of the same clips, searched in-process with
the service's own ``search_shard``:

- **doubled**: the import before a library kept each clip's hop: feature j at 2j and the mean of j and j + 1 at
  2j + 1, stored at 0.48 s (twice the rows);
- **native**: the features as released, one row per 0.96 s, read at the query's hop where a match compares.

Queries are stretches of a clip's true 0.48 s frames, from a random 0.48 s step (so half begin between two
features), with noise in every frame. Beside both, frame voting (``evaluation/references.py``) on each layout.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.sound_space import FRAME_SPREAD, LATENT, NOISE, SoundSpace
from echovids.audio_params import FRAME_HOP_S, VGGISH_EMBEDDING_DIM
from echovids.vectors import l2_normalise

SPACE = "vggish:audioset-pca-uint8:128"
STEPS = 21  # 0.48 s steps a clip's sound is drawn at: its 11 features are the even ones (AudioSet: 10-11 a clip)
WALK = 0.9  # correlation of a sound's latent state from one 0.48 s step to the next
QUERY_NOISE = 0.8  # added to each query frame, relative to its unit length (cosine ~0.78 to the clean frame)
ON_TIME_S = 0.5


@dataclass
class LayoutResult:
    rows: int
    top1: float  # the source first
    on_time: float  # ... and its query start within ON_TIME_S of the truth
    in_top10: float
    frame_voting_top1: float
    p50_ms: float


@dataclass
class FeatureHopReport:
    clips: int
    queries: int
    query_frames: int
    layouts: dict[str, LayoutResult] = field(default_factory=dict)


def sounds(rng: np.random.Generator, space: SoundSpace, clips: int) -> np.ndarray:
    """[clips, STEPS, dim] unit frames every 0.48 s: a smooth walk about each clip's centre."""
    centres = space.clip_centres(rng, space.clip_classes(rng, clips))
    state = rng.standard_normal((clips, LATENT)).astype(np.float32)
    steps = []
    for _ in range(STEPS):
        state = WALK * state + np.sqrt(1 - WALK**2) * rng.standard_normal(state.shape).astype(np.float32)
        x = (centres + FRAME_SPREAD * state / np.sqrt(LATENT)) @ space.basis
        x += (NOISE / np.sqrt(space.dim)) * rng.standard_normal(x.shape).astype(np.float32)
        steps.append(l2_normalise(x))
    return np.stack(steps, axis=1)


def _write(root: Path, truth: np.ndarray, doubled: bool) -> None:
    from services.search.matching import Upsampled
    from services.search.shard import ShardIndex

    index = ShardIndex(root, 0)
    none = {"hashes": np.zeros(0, np.uint32), "times": np.zeros(0, np.int32)}
    for c, frames in enumerate(truth):
        features = frames[0::2].astype(np.float16)
        if doubled:
            arrays = {"vectors": Upsampled(features, 2)[:], **none}
            index.write_segment(f"clip{c:06d}", arrays, SPACE, FRAME_HOP_S)
        else:
            index.write_segment(f"clip{c:06d}", {"vectors": features, **none}, SPACE, 2 * FRAME_HOP_S)
    index.refresh()
    index.compact()


def _measure(root: Path, queries: list[tuple[int, int, np.ndarray]]) -> LayoutResult:
    from evaluation.references import frame_voting
    from services.search.query import search_shard
    from services.search.shard import ShardIndex

    index = ShardIndex(root, 0)
    none = {"hashes": np.zeros(0, np.uint32), "times": np.zeros(0, np.int32)}
    top1 = on_time = in_top10 = voted = 0
    times = []
    for clip, start, vectors in queries:
        t = time.perf_counter()
        found = search_shard(index, SPACE, {"vectors": vectors, **none}, limit=100, k=10)
        times.append((time.perf_counter() - t) * 1000)
        ranked = sorted(found, key=lambda c: -c.score)[:10]
        want = f"clip{clip:06d}"
        in_top10 += any(c.clip_id == want for c in ranked)
        if ranked and ranked[0].clip_id == want:
            top1 += 1
            at = ranked[0].match_start_s - ranked[0].query_start_s
            on_time += abs(at - start * FRAME_HOP_S) <= ON_TIME_S
        votes = frame_voting(index.view(), vectors, 10)
        voted += bool(votes) and votes[0].title == want
    n = len(queries)
    return LayoutResult(
        rows=index.view().rows,
        top1=round(top1 / n, 3),
        on_time=round(on_time / n, 3),
        in_top10=round(in_top10 / n, 3),
        frame_voting_top1=round(voted / n, 3),
        p50_ms=round(statistics.median(times), 2),
    )


def run(clips: int = 20_000, queries: int = 300, query_frames: int = 8, seed: int = 0) -> FeatureHopReport:
    rng = np.random.default_rng(seed)
    space = SoundSpace.draw(rng, VGGISH_EMBEDDING_DIM)
    truth = sounds(rng, space, clips)
    picks = []
    for clip in rng.choice(clips, size=queries, replace=False):
        start = int(rng.integers(0, STEPS - query_frames + 1))
        clean = truth[clip, start : start + query_frames]
        noisy = clean + QUERY_NOISE / np.sqrt(clean.shape[1]) * rng.standard_normal(clean.shape)
        picks.append((int(clip), start, l2_normalise(noisy.astype(np.float32))))
    report = FeatureHopReport(clips=clips, queries=queries, query_frames=query_frames)
    with tempfile.TemporaryDirectory(prefix="echovids-feature-hop-") as tmp:
        for name, doubled in (("doubled", True), ("native", False)):
            root = Path(tmp) / name
            _write(root, truth, doubled)
            report.layouts[name] = _measure(root, picks)
    return report


def table(report: FeatureHopReport) -> str:
    lines = [
        "| layout | rows | top-1 | top-1 on time | source in top 10 | frame voting top-1 | p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in report.layouts.items():
        lines.append(
            f"| {name} | {r.rows} | {r.top1:.3f} | {r.on_time:.3f} | {r.in_top10:.3f} | "
            f"{r.frame_voting_top1:.3f} | {r.p50_ms:.2f} |"
        )
    return "\n".join(lines)
