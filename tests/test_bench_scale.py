"""`echovids bench scale` with tiny numbers: a real stack on a real (synthetic) library, every figure measured."""

from __future__ import annotations

import math
import re
from pathlib import Path

from benchmarks.scale import run


def test_scale_measures_memory_recall_start_and_latency_of_two_search_processes(tmp_path: Path) -> None:
    report = run(frames=2000, processes=2, queries=5, workdir=tmp_path, log=lambda _: None)
    assert report.frames == 2000 and report.search_processes == 2 and report.dim == 1024
    assert report.recall_at_10 >= 0.99  # a small shard is searched exactly
    assert report.rss_mb > report.empty_rss_mb > 100  # two pool processes and their worker, each a Python
    assert math.isfinite(report.bytes_per_frame) and math.isfinite(report.anon_bytes_per_frame)
    assert 0 < report.anon_mb < report.rss_mb  # the interpreters' own memory, and mapped libraries and files beside
    assert report.mapped_bytes_per_frame > 1024  # each frame's int8 codes, landmark postings, columns
    assert report.load_s > 0 and 0 < report.p50_ms <= report.p95_ms
    assert 0 < report.stage_p50_ms["searching"] < report.stage_p50_ms["done"] <= report.p95_ms
    # The worker loaded the shard once, before its pool forked; both pool processes logged theirs (inherited): the
    # start is timed to the later one.
    log = (tmp_path / "serve.log").read_text()
    assert log.count("search worker: shards [0] loaded in") == 1
    assert len(re.findall(r"search process \d+: shards \[0\] loaded in", log)) == 2


def test_two_shards_pinned_to_two_search_workers_answer_as_one(tmp_path: Path) -> None:
    """ECHOVIDS_SEARCH_PINNED: one worker per shard, each loading only its own; every query answered by both."""
    report = run(frames=4000, shards=2, processes=1, queries=5, workdir=tmp_path, pinned=True, log=lambda _: None)
    assert report.pinned and report.shards == 2 and report.search_processes == 2
    log = (tmp_path / "serve.log").read_text()
    for shard in (0, 1):  # each worker loaded its shard for its pool, and its one pool process has it
        assert log.count(f"search worker: shards [{shard}] loaded in") == 1
        assert len(re.findall(rf"search process \d+: shards \[{shard}\] loaded in", log)) == 1
    assert "shards [0, 1] loaded in" not in log
    assert 0 < report.p50_ms <= report.p95_ms  # every answer whole (a partial one raises)


def test_the_benchmark_library_has_clips_a_frame_is_nearest_to() -> None:
    """recall@10 is only a figure of the index if a frame's top 10 are not near-ties: in the benchmarks' sound
    space a frame's nearest frames are its own clip's, though hundreds of clips share the popular classes."""
    import numpy as np

    from benchmarks.sound_space import FRAMES_PER_CLIP, SoundSpace

    rng = np.random.default_rng(0)
    space = SoundSpace.draw(rng, 256)
    clips = 2000
    centres = space.clip_centres(rng, space.clip_classes(rng, clips))
    frames = space.frames(rng, np.repeat(centres, FRAMES_PER_CLIP, axis=0))
    picks = rng.choice(frames.shape[0], 200, replace=False)
    sims = frames[picks] @ frames.T
    sims[np.arange(picks.size), picks] = -np.inf  # not itself
    top = np.argsort(-sims, axis=1)[:, :10]
    own = (top // FRAMES_PER_CLIP) == (picks // FRAMES_PER_CLIP)[:, None]
    assert own.mean() >= 0.8, own.mean()
    # And they are not ties: the 10th is clearly nearer than the 100th.
    ordered = -np.sort(-sims, axis=1)
    assert np.median(ordered[:, 9] - ordered[:, 99]) > 0.05


def test_scale_of_an_audioset_library_128_d_features_at_their_native_hop(tmp_path: Path) -> None:
    """The AudioSet flavour: VGGish's 128-d features, ten a 10 s clip, no landmarks; queried through a stack whose
    embedder is the VGGish-shaped test model, in whose space the library is written."""
    import numpy as np

    from benchmarks.latency import AUDIOSET
    from benchmarks.scale import newest_snapshot

    report = run(frames=2000, processes=2, queries=5, workdir=tmp_path, flavour=AUDIOSET, log=lambda _: None)
    assert report.flavour == "audioset" and report.frames == 2000 and report.dim == report.stored_dim == 128
    assert report.recall_at_10 >= 0.99 and 0 < report.p50_ms <= report.p95_ms  # every answer whole
    segment = np.load(tmp_path / "data" / "shards" / "0" / "segments" / "bench0000000.npz")
    assert segment["vectors"].shape == (10, 128) and segment["hashes"].size == 0 and float(segment["hop_s"]) == 0.96
    assert np.load(newest_snapshot(tmp_path / "data", 0) / "codes.npy", mmap_mode="r").shape == (2000, 128)
