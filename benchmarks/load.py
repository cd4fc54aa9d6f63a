"""Load: N concurrent clients on loopback against `echovids serve`, each searching without pause for a bounded time.

The library is synthetic and written straight to the data dir (benchmarks/latency.py's ``build_library``: segments,
catalog rows, availability cached), so tens of thousands of clips are ready in minutes without embedding any
audio. Each client submits a 5 s query and long-polls it to the end, then the next; per level of concurrency the
report gives throughput, latency percentiles, errors and the resident memory of every process of the stack at the
start and the end. The saturation point is the throughput at the first level whose p95 passes 1 s.

The stack takes the caller's ECHOVIDS_* settings (a per-client rate limit must be set off or high for a load
test from one address), over the defaults below.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.latency import cache_availability, library, query_wav
from benchmarks.sound_space import FRAMES_PER_CLIP
from echovids.harness import Stack, machine_info, make_stack, search_and_wait

SATURATION_P95_MS = 1000.0
MEMORY_SAMPLE_S = 30.0


@dataclass
class LevelReport:
    clients: int
    seconds: float
    completed: int
    errors: int
    error_kinds: dict[str, int]
    throughput_qps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rss_start_mb: float
    rss_end_mb: float
    anon_start_mb: float
    anon_end_mb: float
    anon_by_service_start_mb: dict[str, float]
    anon_by_service_end_mb: dict[str, float]
    # (seconds into the level, stack RSS MB, anonymous MB, anonymous MB by service), every MEMORY_SAMPLE_S: flat,
    # or still growing at the end, and where
    memory_samples: list[tuple[float, float, float, dict[str, float]]] = field(default_factory=list)


@dataclass
class LoadReport:
    clips: int
    frames: int
    shards: int
    build_s: float
    query_s: float
    levels: list[LevelReport]
    # Throughput at the first level whose p95 passed 1 s, and at the last level below it (None: not reached).
    saturation_qps: float | None
    below_saturation_qps: float | None
    machine: dict[str, Any] = field(default_factory=machine_info)


@dataclass
class Memory:
    """The stack's resident memory, and the part of it no file backs: a mapped index file's pages count in the
    RSS of every process that touched them (and grow as queries touch more), while a leak shows in the private,
    anonymous part."""

    rss_mb: float
    anon_mb: float
    anon_by_service_mb: dict[str, float] = field(default_factory=dict)


def service_of(cmdline: list[str]) -> str:
    """Which part of the stack a process is (a worker's pool processes count with their worker)."""
    line = " ".join(cmdline)
    program = Path(line.split(" ", 1)[0]).name  # Redis retitles itself "redis-server host:port"
    if program == "redis-server":
        return "redis"
    if program.startswith("redis-"):
        return "redis-fork"  # a background save or AOF rewrite: a fork, its pages copied as Redis writes
    if "uvicorn" in line:
        return "gateway"
    for part in ("embedder", "search", "availability", "beat"):
        if f" {part}" in line and "echovids.cli" in line:
            return part
    return "supervisord"


def stack_memory(stack: Stack) -> Memory:
    """Resident memory of supervisord and every process under it (Redis, workers and their pools, gateway)."""
    import psutil

    assert stack.proc is not None
    root = psutil.Process(stack.proc.pid)
    rss = anon = 0
    by_service: dict[str, float] = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            info, cmdline = process.memory_info(), process.cmdline()
        except psutil.Error:
            continue  # gone between the listing and the read
        rss += info.rss
        private = info.rss - info.shared  # shared: RssFile + RssShmem
        anon += private
        service = service_of(cmdline)
        by_service[service] = by_service.get(service, 0.0) + private / 2**20
    return Memory(
        rss_mb=round(rss / 2**20, 1),
        anon_mb=round(anon / 2**20, 1),
        anon_by_service_mb={name: round(mb, 1) for name, mb in sorted(by_service.items())},
    )


def client_loop(
    url: str, content: bytes, until: float, latencies: list[float], errors: dict[str, int], lock: threading.Lock
) -> None:
    """One client: search, wait for the answer, search again, until ``until``."""
    with httpx.Client(base_url=url, timeout=60) as client:
        while time.monotonic() < until:
            started = time.perf_counter()
            try:
                job = search_and_wait(client, content, "q.wav", timeout_s=120)
                kind = None if job["status"] == "done" else (job.get("error") or {}).get("code", job["status"])
            except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                kind = type(exc).__name__ if not isinstance(exc, RuntimeError) else str(exc)[:40]
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                if kind is None:
                    latencies.append(elapsed)
                else:
                    errors[kind] = errors.get(kind, 0) + 1


def one_level(stack: Stack, content: bytes, clients: int, seconds: float) -> LevelReport:
    start = stack_memory(stack)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    samples: list[tuple[float, float, float, dict[str, float]]] = []
    started = time.monotonic()
    until = started + seconds
    lock = threading.Lock()
    threads = [
        threading.Thread(target=client_loop, args=(stack.url, content, until, latencies, errors, lock))
        for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    while (left := until - time.monotonic()) > 0:
        time.sleep(min(MEMORY_SAMPLE_S, left))
        memory = stack_memory(stack)
        samples.append((round(time.monotonic() - started, 1), memory.rss_mb, memory.anon_mb, memory.anon_by_service_mb))
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started  # the last answers come after ``until``: counted, and their time too
    end = stack_memory(stack)
    ms = np.array(latencies) if latencies else np.zeros(1)
    return LevelReport(
        clients=clients,
        seconds=round(elapsed, 1),
        completed=len(latencies),
        errors=sum(errors.values()),
        error_kinds=errors,
        throughput_qps=round(len(latencies) / elapsed, 2),
        p50_ms=round(float(np.percentile(ms, 50)), 1),
        p95_ms=round(float(np.percentile(ms, 95)), 1),
        p99_ms=round(float(np.percentile(ms, 99)), 1),
        rss_start_mb=start.rss_mb,
        rss_end_mb=end.rss_mb,
        anon_start_mb=start.anon_mb,
        anon_end_mb=end.anon_mb,
        anon_by_service_start_mb=start.anon_by_service_mb,
        anon_by_service_end_mb=end.anon_by_service_mb,
        memory_samples=samples,
    )


def saturation(levels: list[LevelReport]) -> tuple[float | None, float | None]:
    """(throughput at the first level past a 1 s p95, throughput at the best level before it)."""
    below: float | None = None
    for level in levels:
        if level.p95_ms > SATURATION_P95_MS:
            return level.throughput_qps, below
        below = max(below or 0.0, level.throughput_qps)
    return None, below


def run(
    clips: int = 50_000,
    clients: tuple[int, ...] = (8, 32, 64),
    seconds: float = 60.0,
    query_s: float = 5.0,
    shards: int = 1,
    workdir: Path | None = None,
    log: Callable[[str], None] = print,
) -> LoadReport:
    root, data_dir, built, build_s = library(workdir, "echovids-load-", clips * FRAMES_PER_CLIP, shards, log)
    stack = make_stack(
        data_dir,
        None,
        keep_settings=True,
        ECHOVIDS_SEARCH_SHARDS=str(shards),
        ECHOVIDS_SEARCH_DELTA_MAX="100000000",
        # Every client is on loopback, one address: the per-client limit would measure itself.
        ECHOVIDS_RATE_LIMIT_SEARCHES_PER_S="0",
    )
    stack.log_path = root / "serve.log"
    stack.start(timeout=600)
    try:
        cache_availability((data_dir / "redis" / "url").read_text().strip(), built)
        content = query_wav(root / "query.wav", seconds=query_s).read_bytes()
        with httpx.Client(base_url=stack.url, timeout=60) as client:
            for _ in range(5):  # warm: models loaded, shards mapped, availability read once
                search_and_wait(client, content, "q.wav", timeout_s=120)
        levels = []
        for n in clients:
            level = one_level(stack, content, n, seconds)
            log(
                f"{n} clients: {level.throughput_qps} q/s, p50 {level.p50_ms} ms, p95 {level.p95_ms} ms, "
                f"p99 {level.p99_ms} ms, {level.errors} errors, RSS {level.rss_start_mb} -> {level.rss_end_mb} MB "
                f"(anonymous {level.anon_start_mb} -> {level.anon_end_mb} MB)"
            )
            levels.append(level)
    finally:
        stack.stop()
    saturated, below = saturation(levels)
    return LoadReport(
        clips=built,
        frames=built * FRAMES_PER_CLIP,
        shards=shards,
        build_s=round(build_s, 1),
        query_s=query_s,
        levels=levels,
        saturation_qps=saturated,
        below_saturation_qps=below,
    )


def table(report: LoadReport) -> str:
    lines = [
        "| clients | q/s | p50 ms | p95 ms | p99 ms | errors | stack RSS start -> end MB | anonymous MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for lv in report.levels:
        lines.append(
            f"| {lv.clients} | {lv.throughput_qps} | {lv.p50_ms} | {lv.p95_ms} | {lv.p99_ms} | {lv.errors} | "
            f"{lv.rss_start_mb} -> {lv.rss_end_mb} | {lv.anon_start_mb} -> {lv.anon_end_mb} |"
        )
    return "\n".join(lines)
