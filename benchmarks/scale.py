"""Scale: what a frame costs the search service in memory, and recall, start time and latency at that size.

On benchmarks/latency.py's synthetic library (built, or reused from ``--workdir``):
1. recall@10 of each shard's snapshot, searched as a search process searches it (ScaNN's candidates re-scored
   from the mapped int8 codes of the frames), against exact search over the same stored frames; held-out queries are
   library frames moved by noise (cosine ~0.9 to their source). In this process, from the snapshot alone.
2. `echovids serve` with ``search_processes`` search processes (``pinned``: that many per shard, each worker holding
   only its shard, as on several hosts): ``load_s`` is from the start until the last of them logged its shards
   loaded (services/search/worker.py, the line's own time), ``ready_s`` until /readyz first answered 200, the
   machine's page cache as the build left it.
3. ``queries`` 10 s recordings end to end, one at a time: p50 and p95; every answer from all shards (a partial
   one stops the run).
4. ``rss_mb``: the sum of the search processes' PSS (a page shared by n processes counts 1/n in each), after the
   queries; ``bytes_per_frame``: its growth over the same stack's on an empty library, per frame. The snapshots'
   arrays are mapped, and a page counts once a query touched it, with the neighbours of it the page cache holds
   (the kernel's fault-around: a library just built counts more than the same one read from a cold cache):
   ``anon_bytes_per_frame`` is the growth of the processes' own anonymous memory alone, and
   ``mapped_bytes_per_frame`` the arrays' size on disk per frame, what the page cache holds once every page is hot.
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.latency import YAMNET, Flavour, cache_availability, library, measure, query_wav
from echovids.harness import Stack, machine_info, make_stack

RECALL_QUERIES = 200
EXACT_CHUNK = 100_000  # rows of the exact search at a time: 400 MB of float32 at 1024 dims


@dataclass
class ScaleReport:
    frames: int
    flavour: str  # benchmarks/latency.py's Flavour: what the library's clips hold
    dim: int
    stored_dim: int  # of the frames as the snapshots keep them: projected (ECHOVIDS_SEARCH_PROJECTION_AXES + 1)
    shards: int
    search_processes: int  # in all: a pinned layout runs ``processes`` per shard
    pinned: bool  # one search worker per shard (ECHOVIDS_SEARCH_PINNED), or one worker holding every shard
    build_s: float
    rss_mb: float
    empty_rss_mb: float
    bytes_per_frame: float
    anon_mb: float  # of rss_mb, the processes' anonymous memory
    anon_bytes_per_frame: float  # its growth per frame: bytes_per_frame less the mapped files' pages
    mapped_bytes_per_frame: float
    recall_at_10: float
    load_s: float
    ready_s: float  # from the start until /readyz first answered 200 (every shard loaded, every queue consumed)
    p50_ms: float
    p95_ms: float
    stage_p50_ms: dict[str, float] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=machine_info)


def snapshot_recall(data_dir: Path, shards: int, queries: int = RECALL_QUERIES, seed: int = 7) -> float:
    """Mean recall@10 over every shard's newest snapshot, against exact search on its stored frames."""
    from services.search.shard import read_snapshot

    rng = np.random.default_rng(seed)
    recalls = []
    for shard in range(shards):
        _, sealed = read_snapshot(newest_snapshot(data_dir, shard))
        stored = sealed.frames
        assert stored is not None, "a snapshot written before its frames were mapped"
        picks = rng.choice(stored.shape[0], queries, replace=False)
        noise = rng.standard_normal((queries, stored.shape[1])).astype(np.float32)
        noise *= 0.5 / np.linalg.norm(noise, axis=1, keepdims=True)
        q = stored[picks].astype(np.float32) + noise
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        rows, _ = sealed.search(q, 10)
        best_sims = np.full((queries, 0), -np.inf, np.float32)
        best_rows = np.zeros((queries, 0), np.int64)
        for lo in range(0, stored.shape[0], EXACT_CHUNK):
            sims = q @ stored[lo : lo + EXACT_CHUNK].astype(np.float32).T
            top = np.argpartition(-sims, 9, axis=1)[:, :10]
            best_sims = np.concatenate([best_sims, np.take_along_axis(sims, top, axis=1)], axis=1)
            best_rows = np.concatenate([best_rows, top + lo], axis=1)
            keep = np.argpartition(-best_sims, 9, axis=1)[:, :10]
            best_sims, best_rows = np.take_along_axis(best_sims, keep, axis=1), np.take_along_axis(best_rows, keep, 1)
        recalls += [len(set(a) & set(b)) / 10 for a, b in zip(rows.tolist(), best_rows.tolist())]
    return float(np.mean(recalls))


def newest_snapshot(data_dir: Path, shard: int) -> Path:
    from services.search.shard import SNAPSHOT_MARKER

    found = list((data_dir / "shards" / str(shard) / "snapshots").glob(f"v*/{SNAPSHOT_MARKER}"))
    if not found:
        raise RuntimeError(f"shard {shard} has no snapshot: the library was not compacted")
    return max(found, key=lambda p: int(p.parent.name[1:])).parent


def mapped_bytes(data_dir: Path, shards: int) -> int:
    """Bytes of the arrays a search process maps from each shard's newest snapshot (its .npy files)."""
    return sum(p.stat().st_size for shard in range(shards) for p in newest_snapshot(data_dir, shard).glob("*.npy"))


def search_pss_mb(stack: Stack) -> tuple[float, float]:
    """PSS of the search worker and its pool processes, summed: in all, and of their anonymous memory (heap and
    private mappings: what is theirs, where the mapped files' pages are the page cache's)."""
    import psutil

    assert stack.proc is not None
    total = anonymous = 0
    for process in psutil.Process(stack.proc.pid).children(recursive=True):
        try:
            if "search" in process.cmdline() and "worker" in process.cmdline():
                maps = process.memory_maps(grouped=True)
                total += sum(m.pss for m in maps)
                anonymous += sum(m.pss for m in maps if not m.path.startswith("/"))
        except psutil.Error:
            continue  # gone between the listing and the read
    return total / 2**20, anonymous / 2**20


def started_stack(
    data_dir: Path,
    processes: int,
    shards: int,
    log_path: Path,
    pinned: bool = False,
    embedder: tuple[str, str] = ("yamnet", ""),
) -> tuple[Stack, float]:
    """A running stack and the seconds from its start until the last of its search processes logged its shards
    loaded (the log lines' own times: the stack's start also waits for a first search, which loads the embedder's
    model)."""
    from services.search.worker import LOADED

    # Celery's log line: "[2026-12-07 21:30:59,594: INFO/ForkPoolWorker-1] search process 9046: shards ..."
    loaded = re.compile(
        r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): [^]]*\] "
        + re.escape(LOADED.split(" %d")[0])
        + r" \d+: shards .* loaded in",
        re.MULTILINE,
    )
    stack = make_stack(
        data_dir,
        None,
        ECHOVIDS_SEARCH_SHARDS=str(shards),
        ECHOVIDS_SEARCH_PROCESSES=str(processes),
        ECHOVIDS_SEARCH_PINNED=str(pinned).lower(),
        ECHOVIDS_SEARCH_DELTA_MAX="100000000",
        ECHOVIDS_EMBEDDER=embedder[0],
        ECHOVIDS_VGGISH_HANDLE=embedder[1],
    )
    stack.log_path = log_path
    started, started_at = time.monotonic(), time.time()
    stack.start(timeout=1200)
    expected = processes * (shards if pinned else 1)  # pinned: each shard's worker has ``processes`` of its own
    while len(stamps := loaded.findall(log_path.read_text(errors="replace"))) < expected:
        if time.monotonic() - started > 1200:
            stack.stop()
            raise RuntimeError(f"the search processes did not all load in 1200 s (see {log_path})")
        time.sleep(0.5)
    last = max(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() for stamp in stamps)
    return stack, last - started_at


def run(
    frames: int = 1_000_000,
    shards: int = 1,
    processes: int | None = None,
    queries: int = 50,
    workdir: Path | None = None,
    pinned: bool = False,
    flavour: Flavour = YAMNET,
    log: Callable[[str], None] = print,
) -> ScaleReport:
    from echovids.settings import get_settings

    processes = processes or get_settings().search_processes
    root, data_dir, clips, build_s = library(workdir, "echovids-scale-", frames, shards, log, flavour)
    embedder = flavour.embedder(root)
    log(f"library ready ({build_s:.0f} s); recall of the snapshots ...")
    recall = snapshot_recall(data_dir, shards)
    content = query_wav(root / "query.wav").read_bytes()

    empty = root / "empty" / "data"
    empty.mkdir(parents=True, exist_ok=True)
    stack, _ = started_stack(empty, processes, shards, root / "serve-empty.log", pinned, embedder)
    try:
        measure(stack.url, content, queries=5)
        empty_mb, empty_anon_mb = search_pss_mb(stack)
    finally:
        stack.stop()
    log(f"recall@10 {recall:.3f}; search processes on an empty library {empty_mb:.0f} MB; starting on the library ...")
    stack, load_s = started_stack(data_dir, processes, shards, root / "serve.log", pinned, embedder)
    ready_s = stack.ready_s
    assert ready_s is not None, "a started stack has answered /readyz"
    try:
        cache_availability((data_dir / "redis" / "url").read_text().strip(), clips)
        answers = measure(stack.url, content, queries)
        rss_mb, anon_mb = search_pss_mb(stack)
    finally:
        stack.stop()
    n = clips * flavour.frames_per_clip
    ms = np.array([total for total, _ in answers])
    # When each stage began, from submission (medians): "checking" starts once the shards' answers are merged.
    stages = {name: round(float(np.median([st[name] for _, st in answers if name in st])), 1) for name in answers[0][1]}
    return ScaleReport(
        frames=n,
        flavour=flavour.name,
        dim=flavour.dim,
        stored_dim=int(np.load(newest_snapshot(data_dir, 0) / "codes.npy", mmap_mode="r").shape[1]),
        shards=shards,
        search_processes=processes * (shards if pinned else 1),
        pinned=pinned,
        build_s=round(build_s, 1),
        rss_mb=round(rss_mb, 1),
        empty_rss_mb=round(empty_mb, 1),
        bytes_per_frame=round((rss_mb - empty_mb) * 2**20 / n, 1),
        anon_mb=round(anon_mb, 1),
        anon_bytes_per_frame=round((anon_mb - empty_anon_mb) * 2**20 / n, 1),
        mapped_bytes_per_frame=round(mapped_bytes(data_dir, shards) / n, 1),
        recall_at_10=round(recall, 4),
        load_s=round(load_s, 1),
        ready_s=round(ready_s, 1),
        p50_ms=round(float(np.percentile(ms, 50)), 1),
        p95_ms=round(float(np.percentile(ms, 95)), 1),
        stage_p50_ms=stages,
    )
