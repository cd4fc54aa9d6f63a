"""What one cached search costs in hops: Redis commands and Celery tasks per search, and its latency under load.

Each ``source`` is a checkout of the code. Its stack is `echovids serve` run from that checkout (cwd and
PYTHONPATH set to it), so one run measures a baseline tree and the current tree one after the other; rounds
alternate the order (A B, B A, ...) and each figure is the median over rounds.

Per source and round: ingest a small library of files, warm up, then
- 100 sequential searches of one short query (the same recording each time: file clips need no YouTube check,
  so nothing but the search path runs). Around them, Redis ``CONFIG RESETSTAT`` / ``INFO commandstats`` count
  every command by type, and a ``MONITOR`` connection counts the Celery task messages published: kombu's Redis
  transport sends each message, countdown/ETA ones included, as one ``LPUSH`` of a JSON body whose headers name
  the task. The window ends ``drain_s`` after the last search, so tasks delayed by the search timeout run inside
  it. The workers' idle traffic (1 s BRPOP polls, beat, heartbeats) is measured in a window with no searches and
  subtracted at its rate; the raw figures are reported too.
- ``clients`` threads, each ``per_client`` searches (submit, then long-poll ``GET /v1/searches/{id}?wait=30``):
  p50/p95 of the end-to-end time.
"""

from __future__ import annotations

import re
import socket
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import redis

from echovids.cli import AUDIO_SUFFIXES
from echovids.harness import Stack, make_stack
from evaluation.dataset import DEFAULT_ESC10

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LIBRARY = DEFAULT_ESC10 / "audio"
# Our own measuring commands, not the search's.
OWN_COMMANDS = {"config|resetstat", "config", "info", "monitor", "echo", "auth"}
TASK_HEADER = re.compile(rb'\\"task\\": \\"([^"\\]+)\\"')


@dataclass
class Figures:
    """One source's figures (one round, or the medians over rounds)."""

    searches: int
    window_s: float
    redis_per_search: float  # net of idle traffic
    redis_per_search_raw: float
    redis_by_command: dict[str, float]  # net per search
    tasks_per_search: float
    tasks_per_search_raw: float
    tasks_by_name: dict[str, float]
    idle_redis_per_s: float
    concurrent_searches: int
    clients: int
    p50_ms: float
    p95_ms: float


@dataclass
class HopsReport:
    sources: dict[str, Figures]
    rounds: int
    ratio: dict[str, float] = field(default_factory=dict)  # last source / first source


class TaskCounter:
    """Task messages published to Redis, by task name, read from a MONITOR connection."""

    def __init__(self, url: str) -> None:
        u = urlparse(url)
        self._url = url
        self._marker = f"hops-end-{time.monotonic_ns()}".encode()
        self._sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379))
        self._lines = self._sock.makefile("rb")
        if u.password:  # the embedded Redis has a password of its own
            password = unquote(u.password).encode()
            self._sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(password), password))
            if not self._lines.readline().startswith(b"+OK"):
                raise RuntimeError("Redis refused the password")
        self._sock.sendall(b"MONITOR\r\n")
        if not self._lines.readline().startswith(b"+OK"):
            raise RuntimeError("Redis refused MONITOR")
        self.tasks: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._lines:
            if self._marker in line:
                return
            if b'"lpush"' in line[:100].lower():
                found = TASK_HEADER.search(line)
                self.tasks[found.group(1).decode() if found else "(not a task)"] += 1

    def stop(self) -> Counter[str]:
        """Every command sent before this call is counted: MONITOR shows them in order, the marker last."""
        redis.Redis.from_url(self._url).echo(self._marker)
        self._thread.join(timeout=30)
        self._sock.close()
        return self.tasks


def window(url: str, body: Callable[[], None]) -> tuple[Counter[str], Counter[str], float]:
    """Redis commands by type, task messages by name, and seconds, while ``body`` runs."""
    client = redis.Redis.from_url(url)
    client.config_resetstat()
    counter = TaskCounter(url)
    started = time.perf_counter()
    body()
    seconds = time.perf_counter() - started
    tasks = counter.stop()
    stats = client.info("commandstats")
    commands = Counter(
        {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items() if isinstance(v, dict)}
    )
    for name in OWN_COMMANDS:
        commands.pop(name, None)
    return commands, tasks, seconds


def net_per_search(busy: Counter[str], idle: Counter[str], busy_s: float, idle_s: float, n: int) -> dict[str, float]:
    names = set(busy) | set(idle)
    per = {k: (busy[k] - idle[k] * busy_s / idle_s) / n for k in names}
    return {k: round(v, 2) for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if abs(v) >= 0.05}


def timed_search(stack: Stack, query: Path) -> float:
    started = time.perf_counter()
    job = stack.search(query, k=5)
    if job["status"] != "done":
        raise RuntimeError(f"search {job['id']} {job['status']}: {job.get('error')}")
    return (time.perf_counter() - started) * 1000


def measure(
    stack: Stack,
    query: Path,
    searches: int,
    clients: int,
    per_client: int,
    idle_s: float,
    drain_s: float,
    warmup: int = 5,
) -> Figures:
    url = (stack.data_dir / "redis" / "url").read_text().strip()
    for _ in range(warmup):
        timed_search(stack, query)
    time.sleep(drain_s)  # the warm-up's delayed tasks run before the windows open

    def searching() -> None:
        for _ in range(searches):
            timed_search(stack, query)
        time.sleep(drain_s)

    idle_cmds, idle_tasks, idle_len = window(url, lambda: time.sleep(idle_s))
    cmds, tasks, busy_len = window(url, searching)
    by_command = net_per_search(cmds, idle_cmds, busy_len, idle_len, searches)
    by_task = net_per_search(tasks, idle_tasks, busy_len, idle_len, searches)

    with ThreadPoolExecutor(clients) as pool:
        ms = list(pool.map(lambda _: timed_search(stack, query), range(clients * per_client)))
    return Figures(
        searches=searches,
        window_s=round(busy_len, 1),
        redis_per_search=round(sum(by_command.values()), 1),
        redis_per_search_raw=round(sum(cmds.values()) / searches, 1),
        redis_by_command=by_command,
        tasks_per_search=round(sum(by_task.values()), 2),
        tasks_per_search_raw=round(sum(tasks.values()) / searches, 2),
        tasks_by_name=by_task,
        idle_redis_per_s=round(sum(idle_cmds.values()) / idle_len, 1),
        concurrent_searches=len(ms),
        clients=clients,
        p50_ms=round(float(np.percentile(ms, 50)), 1),
        p95_ms=round(float(np.percentile(ms, 95)), 1),
    )


def library_files(library: Path, files: int) -> list[Path]:
    """``files`` files spread evenly over the folder (ESC-10 is sorted by class: one of each class, and so on)."""
    found = sorted(p for p in library.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    if len(found) < files:
        raise RuntimeError(f"{library} has {len(found)} audio files, {files} wanted")
    step = len(found) / files
    return [found[int(i * step)] for i in range(files)]


def median_figures(rounds: list[Figures]) -> Figures:
    if len(rounds) == 1:
        return rounds[0]
    merged: dict[str, object] = {}
    for name, value in asdict(rounds[0]).items():
        if isinstance(value, dict):
            keys = {k for r in rounds for k in getattr(r, name)}
            merged[name] = {k: statistics.median(getattr(r, name).get(k, 0.0) for r in rounds) for k in keys}
        else:
            merged[name] = statistics.median(getattr(r, name) for r in rounds)
    return Figures(**merged)  # type: ignore[arg-type]


def run(
    sources: list[Path],
    files: int = 40,
    searches: int = 100,
    clients: int = 8,
    per_client: int = 10,
    rounds: int = 1,
    idle_s: float = 15.0,
    drain_s: float = 12.0,
    warmup: int = 5,
    library: Path = DEFAULT_LIBRARY,
    workdir: Path | None = None,
    log: Callable[[str], None] = print,
) -> HopsReport:
    root = Path(workdir or tempfile.mkdtemp(prefix="echovids-hops-"))
    picked = library_files(library, files)
    query = picked[0]
    results: dict[str, list[Figures]] = {str(s): [] for s in sources}
    for r in range(rounds):
        for source in sources if r % 2 == 0 else sources[::-1]:
            data_dir = root / f"source{sources.index(source)}" / "data"
            data_dir.mkdir(parents=True, exist_ok=True)
            stack = make_stack(data_dir, None, PYTHONPATH=str(source.resolve()), ECHOVIDS_RATE_LIMIT_SEARCHES_PER_S="0")
            stack.cwd = source.resolve()
            log(f"round {r + 1}/{rounds}: {source} (data in {data_dir})")
            stack.start(timeout=180)
            try:
                done = stack.cli("ingest", *map(str, picked), timeout=900)
                if done.returncode != 0:
                    raise RuntimeError(f"ingest failed:\n{done.stdout}\n{done.stderr}")
                figures = measure(stack, query, searches, clients, per_client, idle_s, drain_s, warmup)
            finally:
                stack.stop()
            log(
                f"  {figures.redis_per_search} Redis commands, {figures.tasks_per_search} tasks per search; "
                f"p95 {figures.p95_ms} ms under {clients} clients"
            )
            results[str(source)].append(figures)
    report = HopsReport(sources={s: median_figures(f) for s, f in results.items()}, rounds=rounds)
    if len(sources) > 1:
        first, last = report.sources[str(sources[0])], report.sources[str(sources[-1])]
        for name in ("redis_per_search", "tasks_per_search", "p50_ms", "p95_ms"):
            a, b = getattr(first, name), getattr(last, name)
            report.ratio[name] = round(b / a, 3) if a else float("nan")
    return report


def table(report: HopsReport) -> str:
    names = list(report.sources)
    rows = [
        ("Redis commands / search (net)", "redis_per_search"),
        ("Redis commands / search (raw)", "redis_per_search_raw"),
        ("Celery tasks / search (net)", "tasks_per_search"),
        ("Celery tasks / search (raw)", "tasks_per_search_raw"),
        ("idle Redis commands / s", "idle_redis_per_s"),
        ("p50 ms, concurrent clients", "p50_ms"),
        ("p95 ms, concurrent clients", "p95_ms"),
    ]
    head = "| figure | " + " | ".join(names) + (" | new/base |" if report.ratio else " |")
    lines = [head, "|" + "---|" * (len(names) + 1 + bool(report.ratio))]
    for label, key in rows:
        cells = [str(getattr(report.sources[n], key)) for n in names]
        ratio = [str(report.ratio.get(key, ""))] if report.ratio else []
        lines.append(f"| {label} | " + " | ".join(cells + ratio) + " |")
    for n in names:
        f = report.sources[n]
        lines.append(f"\n{n}: Redis commands per search by type: {f.redis_by_command}")
        lines.append(f"{n}: tasks per search by name: {f.tasks_by_name}")
    return "\n".join(lines)
