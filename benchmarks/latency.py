"""End-to-end query latency (submit to done, through the HTTP API) against a large synthetic library.

The library is written straight to the data dir (segments, catalog rows, cached availability) and each
shard is compacted before the stack starts, so the measurement is of queries, not of ingest. Two kinds of library
(``Flavour``):
- ``yamnet``: what `echovids ingest` makes of audio: 1024-d frames every 0.48 s, landmark postings, and class scores
  (each frame's top 10 of YAMNet's 521 classes, drawn from its sound type's few), so a search by description
  (``text``) reads posting lists as long as a real library's;
- ``audioset``: what `echovids import-audioset` makes of AudioSet's released features: 128-d VGGish frames at
  their native 0.96 s hop, ten a clip, no landmarks (no audio) and no frame class scores (a clip's labels only).
  Its stack embeds queries with the VGGish-shaped test model (tests/vggish_stub.py: no VGGish weights offline), in
  whose space the library is written.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np

from benchmarks import reach_test_fixtures
from benchmarks.sound_space import FRAMES_PER_CLIP, SoundSpace
from echovids.audio import SAMPLE_RATE
from echovids.audio_params import FRAME_HOP_S, VGGISH_EMBEDDING_DIM, VGGISH_FEATURE_HOP_S
from echovids.harness import make_stack, search_and_wait, text_search_and_wait, write_wav

if TYPE_CHECKING:
    import redis

CLASSES = 521
TYPE_CLASSES = 6  # the classes a sound type is mostly heard as
VGGISH_STUB = "vggish-stub"  # the audioset flavour's query model, a folder of the benchmark's root


@dataclass(frozen=True)
class Flavour:
    """What a synthetic library's clips hold (10 s each)."""

    name: str
    dim: int
    hop_s: float
    frames_per_clip: int
    audio: bool  # made from audio: landmark postings and per-frame class scores beside the frames

    def space(self, root: Path) -> str:
        """The embedding space the library is written in: the one its stack's embedder reports."""
        if self.audio:
            return "yamnet:tflite-1:1024"
        from services.embedder.models.vggish import space_version

        return f"vggish:{space_version(str(vggish_stub(root)), None)}:{self.dim}"

    def embedder(self, root: Path) -> tuple[str, str]:
        """ECHOVIDS_EMBEDDER and ECHOVIDS_VGGISH_HANDLE of a stack that can query the library."""
        return ("yamnet", "") if self.audio else ("vggish", str(vggish_stub(root)))


YAMNET = Flavour("yamnet", 1024, FRAME_HOP_S, FRAMES_PER_CLIP, audio=True)
AUDIOSET = Flavour("audioset", VGGISH_EMBEDDING_DIM, VGGISH_FEATURE_HOP_S, 10, audio=False)  # AudioSet's 10 a clip
FLAVOURS = {f.name: f for f in (YAMNET, AUDIOSET)}


def vggish_stub(root: Path) -> Path:
    """The VGGish-shaped test SavedModel in ``root``, written the first time (a reused workdir keeps its space)."""
    handle = root / VGGISH_STUB
    if not (handle / "saved_model.pb").exists():
        reach_test_fixtures()
        from tests.vggish_stub import save_stub

        save_stub(handle)
    return handle


@dataclass
class LatencyReport:
    frames: int
    clips: int
    shards: int
    dim: int
    query: str  # "10 s recording" or the text searched for
    build_s: float
    queries: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    stage_p50_ms: dict[str, float]  # median time from submission to the start of each stage


@contextlib.contextmanager
def _settings(**values: str) -> Iterator[None]:
    """ECHOVIDS_* settings of this process for the block, then as they were (a later test or stack must not
    inherit the library's data dir and shard count)."""
    from echovids.settings import get_settings

    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()


def build_library(
    data_dir: Path,
    frames: int,
    shards: int,
    seed: int = 0,
    flavour: Flavour = YAMNET,
    log: Callable[[str], None] = lambda _: None,
) -> int:
    """Write segments, catalog rows and cached availability for ``frames`` frames; compact every shard."""
    with _settings(ECHOVIDS_DATA_DIR=str(data_dir), ECHOVIDS_SEARCH_SHARDS=str(shards)):
        return _build_library(data_dir, frames, shards, seed, flavour, log)


CATALOG_BATCH = 20_000  # rows a catalog insert: millions of clips' rows are not held at once


def _build_library(
    data_dir: Path, frames: int, shards: int, seed: int, flavour: Flavour, log: Callable[[str], None]
) -> int:
    from echovids import catalog
    from echovids.schemas import ClipStatus
    from services.search.shard import ShardIndex

    rng = np.random.default_rng(seed)
    sounds = SoundSpace.draw(rng, flavour.dim)
    space = flavour.space(data_dir.parent)
    # Each sound type is heard as a few classes, weighted as YAMNet's sigmoid scores are (one loud, a tail).
    type_classes = rng.integers(0, CLASSES, size=(2048, TYPE_CLASSES))
    clips = frames // flavour.frames_per_clip
    indexes = {i: ShardIndex(data_dir, i) for i in range(shards)}
    no_landmarks = {"hashes": np.empty(0, np.uint32), "times": np.empty(0, np.int32)}
    rows = []
    started = time.monotonic()
    for c in range(clips):
        clip_id = f"bench{c:07d}"
        shard = catalog.shard_of(clip_id, shards)
        # A clip's frames lie about its own centre; its class scores drift between a few sound types, as a real
        # recording's do.
        sound_class = sounds.clip_classes(rng, 1)
        centre = sounds.clip_centres(rng, sound_class)
        arrays = {"vectors": sounds.frames(rng, np.repeat(centre, flavour.frames_per_clip, axis=0)), **no_landmarks}
        if flavour.audio:
            types = rng.integers(0, 2048, size=3)
            arrays["hashes"] = rng.integers(0, 2**22, size=1900, dtype=np.uint32)
            arrays["times"] = np.sort(rng.integers(0, 625, size=1900)).astype(np.int32)
            arrays.update(class_columns(rng, type_classes[types]))
        indexes[shard].write_segment(clip_id, arrays, space, flavour.hop_s)
        rows.append(
            {
                "id": clip_id,
                "title": f"Bench clip {c}",
                "source_kind": "youtube",
                "youtube_id": f"bv{c:09d}",
                "start_s": 30.0,
                "end_s": 40.0,
                "duration_s": 10.0,
                "labels": [] if flavour.audio else [f"class {int(sound_class[0])}"],
                "space": space,
                "shard": shard,
                "n_frames": flavour.frames_per_clip,
                "status": ClipStatus.ready,
            }
        )
        if len(rows) == CATALOG_BATCH or c == clips - 1:
            with catalog.session() as s:
                s.bulk_insert_mappings(catalog.Clip, rows)  # type: ignore[arg-type]
            rows.clear()
            log(f"  {c + 1} of {clips} clips written ({time.monotonic() - started:.0f} s)")
    for shard, index in indexes.items():
        index.refresh()
        index.compact()
        log(f"  shard {shard} compacted ({time.monotonic() - started:.0f} s)")
    return clips


def library(
    workdir: Path | None,
    prefix: str,
    frames: int,
    shards: int,
    log: Callable[[str], None] = lambda _: None,
    flavour: Flavour = YAMNET,
) -> tuple[Path, Path, int, float]:
    """(root, data dir, clips, build seconds) of the library in ``workdir``: one a benchmark built there before,
    reused as it is, or ``frames`` frames built now (in a new temporary folder without ``workdir``)."""
    root = Path(workdir or tempfile.mkdtemp(prefix=prefix))
    data_dir = root / "data"
    started = time.perf_counter()
    if (data_dir / "catalog.sqlite3").exists():
        return root, data_dir, frames // flavour.frames_per_clip, 0.0
    log(f"building {frames} {flavour.name} frames in {shards} shard(s) in {data_dir} ...")
    clips = build_library(data_dir, frames, shards, flavour=flavour, log=log)
    return root, data_dir, clips, time.perf_counter() - started


def class_columns(rng: np.random.Generator, classes: np.ndarray) -> dict[str, np.ndarray]:
    """A clip's per-frame compact class scores and labels: each frame hears one of the clip's sound types."""
    from echovids import class_scores

    scores = rng.uniform(0.0, 0.02, size=(FRAMES_PER_CLIP, CLASSES)).astype(np.float32)
    heard = classes[rng.integers(0, classes.shape[0], size=FRAMES_PER_CLIP)]
    rows = np.arange(FRAMES_PER_CLIP)[:, None]
    scores[rows, heard] = rng.uniform(0.05, 0.9, size=heard.shape) ** 2
    compact = class_scores.encode(scores)
    used = np.unique(compact.ids[:, :3])
    return {
        "class_ids": compact.ids,
        "class_levels": compact.levels,
        "frame_labels": np.searchsorted(used, compact.ids[:, :3]).astype(np.int16),
        "label_names": np.array([f"class {i}" for i in used]),
    }


def cache_availability(redis_url: str, clips: int) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    pipe = client.pipeline(transaction=False)
    for c in range(clips):
        pipe.set(f"echovids:yt:bv{c:09d}", "available", ex=86400)
    pipe.execute()
    settle_persistence(client)


def settle_persistence(client: redis.Redis) -> None:
    """Have Redis write its snapshot and rewrite its log now, and wait: millions of keys just set start both (a
    fork and seconds of work each) in the middle of the timed queries otherwise."""
    from redis.exceptions import ResponseError

    # Either may be running already (Redis's own "save 60 1000" can start a snapshot while the keys are written):
    # Redis refuses a second one, and waiting for it below is the same.
    with contextlib.suppress(ResponseError):
        client.bgrewriteaof()
    with contextlib.suppress(ResponseError):
        client.bgsave(schedule=True)
    busy = ("rdb_bgsave_in_progress", "aof_rewrite_in_progress", "aof_rewrite_scheduled")
    while any(int(client.info("persistence").get(name, 0)) for name in busy):
        time.sleep(0.2)


def query_wav(path: Path, seconds: float = 10.0) -> Path:
    rng = np.random.default_rng(5)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return write_wav(path, 0.3 * np.sin(2 * np.pi * (300 + 200 * t) * t) + 0.05 * rng.standard_normal(t.size))


def one_query(client: httpx.Client, content: bytes, text: str | None = None) -> tuple[float, dict[str, float]]:
    """Submit to settled, through a long poll (answered the moment the job settles: no polling load)."""
    started = time.perf_counter()
    if text is not None:
        job = text_search_and_wait(client, text, timeout_s=600)
    else:
        job = search_and_wait(client, content, "q.wav", timeout_s=600)
    if job["status"] != "done":
        raise RuntimeError(job.get("error") or f"still {job['status']}")
    if job["partial"]:  # a figure of fewer shards than the library has is no figure of it
        raise RuntimeError(f"a partial answer: shards {job['missing_shards']} did not answer")
    return (time.perf_counter() - started) * 1000, job["stage_ms"]


def measure(
    url: str, content: bytes, queries: int, warmup: int = 5, text: str | None = None
) -> list[tuple[float, dict[str, float]]]:
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(warmup):
            one_query(client, content, text)
        return [one_query(client, content, text) for _ in range(queries)]


def run(
    frames: int = 1_000_000, shards: int = 1, queries: int = 50, workdir: Path | None = None, text: str | None = None
) -> LatencyReport:
    """Build the library, start `echovids serve` on it, time ``queries`` sequential 10 s (or ``text``) queries."""
    root, data_dir, clips, build_s = library(workdir, "echovids-latency-", frames, shards)
    stack = make_stack(
        data_dir,
        None,
        ECHOVIDS_SEARCH_SHARDS=str(shards),
        ECHOVIDS_SEARCH_DELTA_MAX="100000000",
        # One search process, as every latency figure of docs/benchmarks.md was taken (two fit since a snapshot
        # is memory-mapped and shared: `bench scale` runs the default two).
        ECHOVIDS_SEARCH_PROCESSES="1",
    )
    stack.log_path = root / "serve.log"
    stack.start(timeout=600)
    try:
        cache_availability((data_dir / "redis" / "url").read_text().strip(), clips)
        content = query_wav(root / "query.wav").read_bytes()
        answers = measure(stack.url, content, queries, text=text)
    finally:
        stack.stop()
    ms = np.array([total for total, _ in answers])
    stages = {name: round(float(np.median([st[name] for _, st in answers if name in st])), 1) for name in answers[0][1]}
    return LatencyReport(
        frames=clips * FRAMES_PER_CLIP,
        clips=clips,
        shards=shards,
        dim=1024,
        query=repr(text) if text is not None else "10 s recording",
        build_s=round(build_s, 1),
        queries=queries,
        p50_ms=round(float(np.percentile(ms, 50)), 1),
        p95_ms=round(float(np.percentile(ms, 95)), 1),
        mean_ms=round(float(ms.mean()), 1),
        stage_p50_ms=stages,
    )


def text_shard_ms(text: str, frames: int = 1_000_000, queries: int = 50, seed: int = 0) -> dict[str, float]:
    """One shard's part of a search by description at ``frames`` frames, in this process (no stack).

    The shard holds class scores laid out as `run` writes them but 8-d vectors (the text path never reads the
    vectors, and a 1M x 1024 ScaNN build does not fit a small machine); the text is mapped once, as the embedder
    would, and ``search_text_shard`` is timed.
    """
    import statistics

    from services.embedder.tasks import text_arrays, text_mapper
    from services.search.query import search_text_shard
    from services.search.shard import ClipData, ShardIndex

    rng = np.random.default_rng(seed)
    type_classes = rng.integers(0, CLASSES, size=(2048, TYPE_CLASSES))
    index = ShardIndex(Path(tempfile.mkdtemp(prefix="echovids-text-shard-")), 0)
    started = time.perf_counter()
    clips = frames // FRAMES_PER_CLIP
    for c in range(clips):
        columns = class_columns(rng, type_classes[rng.integers(0, 2048, size=3)])
        index._clips[f"bench{c:07d}"] = ClipData(
            np.ones((FRAMES_PER_CLIP, 8), np.float16),
            np.zeros(0, np.uint32),
            np.zeros(0, np.int32),
            columns["frame_labels"],
            columns["label_names"],
            columns["class_ids"],
            columns["class_levels"],
        )
    index._append(list(index._clips))  # the in-memory layout a refresh builds from segments
    build_s = time.perf_counter() - started
    arrays, _ = text_arrays(text_mapper(), text)
    search_text_shard(index, arrays, limit=30)  # the first query merges the postings' tail
    times = []
    for _ in range(queries):
        t0 = time.perf_counter()
        search_text_shard(index, arrays, limit=30)
        times.append((time.perf_counter() - t0) * 1000)
    return {
        "frames": clips * FRAMES_PER_CLIP,
        "postings": len(index.classes),
        "build_s": round(build_s, 1),
        "p50_ms": round(statistics.median(times), 1),
        "p95_ms": round(float(np.percentile(times, 95)), 1),
    }
