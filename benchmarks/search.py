"""ANN benchmark of the search service: ScaNN against FAISS (HNSW, IVF-PQ), hnswlib and exact search.

`echovids bench search` is a thin wrapper around :func:`run`. For every method the benchmark measures

* build time (wall clock, ``threads`` threads for every library),
* memory: growth of the process's resident set over the build (malloc trimmed before and after), i.e. what the
  index holds besides the benchmark's own copy of the vectors,
* queries/s single-thread (one query per call, 1 thread) and batched (all queries in one call, ``threads``
  threads),
* recall@k against exact search (brute-force matmul of unit vectors = cosine; exact itself is the baseline).

Timings are medians of ``repeats`` runs. The vectors are the library's own YAMNet frames when a data dir holds
shard segments, else a clustered synthetic set (see :func:`synthetic_vectors`); ``dims`` below the stored
dimension are the same vectors as a shard keeps them projected (``pca_project``), every method on those.

HNSW builds at 1M x 1024 take long on two cores: every HNSW build first inserts a prefix of the rows, estimates
the full build time from it (n log n scaling, a lower bound) and, past ``hnsw_budget_s``, stops there and reports
the estimate (labelled "est.") with no query numbers rather than spend the benchmark's time budget.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.sound_space import FRAMES_PER_CLIP, SoundSpace
from echovids.harness import install_hint, machine_info, missing_modules
from echovids.vectors import Projection, l2_normalise

ALL_METHODS = ("exact", "scann", "faiss-hnsw", "faiss-ivfpq", "hnswlib")
# The module each method imports, and the extra of pyproject.toml that installs it: checked before a run starts,
# so a missing peer fails in a second instead of after the minutes spent building the others.
METHOD_NEEDS = {
    "scann": ("scann", "search"),
    "faiss-hnsw": ("faiss", "bench"),
    "faiss-ivfpq": ("faiss", "bench"),
    "hnswlib": ("hnswlib", "bench"),
}


def method_needs(methods: tuple[str, ...] | list[str]) -> dict[str, str]:
    """The modules ``methods`` import, each with the extra that installs it."""
    return dict(METHOD_NEEDS[m] for m in methods if m in METHOD_NEEDS)


@dataclass
class BenchConfig:
    n: int = 1_000_000
    dims: tuple[int, ...] = (1024,)
    queries: int = 500
    k: int = 10
    single_queries: int = 300  # at most this many one-at-a-time queries per timing run
    single_budget_s: float = 2.0  # ... and at most about this long per timing run (exact search is slow)
    repeats: int = 3
    threads: int = 0  # 0 = every CPU this process may use
    methods: tuple[str, ...] = ALL_METHODS
    source: str = "auto"  # auto | real | synthetic
    data_dir: Path | None = None
    seed: int = 0
    target_recall: float = 0.95
    # Per HNSW build; past it the build time is estimated, not measured. At 1M x 1024 on 2 cores the two HNSW
    # builds take ~490 s and ~430 s: 900 s measures both and still stops a build that would break the 30 minutes.
    hnsw_budget_s: float = 900.0
    hnsw_m: int = 16
    hnsw_ef_construction: int = 100
    scann_variants: tuple[str, ...] = ("production",)  # its leaves-to-search sweep gives the settings

    def resolved_threads(self) -> int:
        return self.threads or len(os.sched_getaffinity(0))


@dataclass
class Row:
    dim: int
    method: str
    params: str
    recall: float | None
    qps_single: float | None
    qps_batched: float | None
    build_s: float | None
    memory_mb: float | None
    note: str = ""


@dataclass
class Report:
    config: dict[str, Any]
    machine: dict[str, Any]
    dataset: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rows"] = [asdict(r) for r in self.rows]
        return out


# -- machine and memory ---------------------------------------------------------------------------------------
def _library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in ("numpy", "scann", "faiss-cpu", "hnswlib"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def trim_memory() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # numpy's BLAS then uses its default thread count
        yield
        return
    with threadpool_limits(limits=n):
        yield


# -- vectors --------------------------------------------------------------------------------------------------
def synthetic_vectors(n: int, n_queries: int, dim: int = 1024, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors shaped like audio frames (benchmarks/sound_space.py), and held-out queries: half
    fresh frames of library clips (a re-recording of a known sound), half frames of new clips."""
    rng = np.random.default_rng(seed)
    space = SoundSpace.draw(rng, dim)
    n_clips = -(-n // FRAMES_PER_CLIP)
    centres = space.clip_centres(rng, space.clip_classes(rng, n_clips))
    base = np.empty((n, dim), dtype=np.float32)
    chunk = 50_000
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        base[start:stop] = space.frames(rng, centres[np.arange(start, stop) // FRAMES_PER_CLIP])
    known = n_queries // 2
    query_centres = np.concatenate(
        [
            centres[rng.integers(0, n_clips, size=known)],
            space.clip_centres(rng, space.clip_classes(rng, n_queries - known)),
        ]
    )
    queries = space.frames(rng, query_centres)
    return base, queries[rng.permutation(n_queries)]


def library_vectors(data_dir: Path, limit: int) -> np.ndarray | None:
    """Up to ``limit`` frame vectors of the library's shard segments (float16 on disk), or None if none."""
    paths = sorted(data_dir.glob("shards/*/segments/*.npz"))
    parts, total = [], 0
    for path in paths:
        if total >= limit:
            break
        with np.load(path) as seg:
            v = seg["vectors"]
        parts.append(l2_normalise(v[: limit - total]))  # per segment: no second copy of the whole set
        total += len(parts[-1])
    if not total:
        return None
    return np.concatenate(parts)


def load_dataset(config: BenchConfig) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(base, queries, description) at the stored dimension, unit vectors, queries held out of the base."""
    real = None
    if config.source in ("auto", "real"):
        data_dir = config.data_dir
        if data_dir is None:
            from echovids.settings import get_settings

            data_dir = get_settings().data_dir
        real = library_vectors(Path(data_dir), config.n + config.queries)
        if real is None and config.source == "real":
            raise FileNotFoundError(f"no shard segments under {data_dir}")
        if real is not None and len(real) <= config.queries:
            real = None  # too few frames to hold queries out
    if real is not None:
        rng = np.random.default_rng(config.seed)
        held = np.zeros(len(real), dtype=bool)
        held[rng.choice(len(real), size=config.queries, replace=False)] = True
        queries, base = real[held], real[~held]
        return (
            base,
            queries,
            {"source": "real YAMNet frames", "n": len(base), "queries": len(queries), "stored_dim": base.shape[1]},
        )
    base, queries = synthetic_vectors(config.n, config.queries, 1024, config.seed)
    return (
        base,
        queries,
        {
            "source": "synthetic clustered (512 classes, 20-frame clips, 96-d latent)",
            "n": len(base),
            "queries": len(queries),
            "stored_dim": base.shape[1],
        },
    )


def fitted_projection(base: np.ndarray, axes: int, seed: int = 0) -> Projection:
    """A shard's projection (echovids.vectors.Projection) of ``base``, fitted on as many rows as a shard's is."""
    from services.search.shard import PROJECTION_SAMPLE_ROWS

    rng = np.random.default_rng(seed)
    sample = rng.choice(len(base), size=min(len(base), PROJECTION_SAMPLE_ROWS), replace=False)
    return Projection.fit(base[np.sort(sample)], axes)


def pca_project(base: np.ndarray, queries: np.ndarray, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The rows as a shard keeps them at ``dim`` dimensions: projected on ``dim - 1`` principal axes fitted on a
    sample (echovids.vectors.Projection, rotated), plus the norm of the rest; unit rows stay unit rows."""
    projection = fitted_projection(base, dim - 1, seed)
    projected = np.empty((len(base), dim), dtype=np.float32)
    for start in range(0, len(base), 100_000):
        projected[start : start + 100_000] = projection(base[start : start + 100_000])
    return projected, projection(queries)


# -- exact search ---------------------------------------------------------------------------------------------
def exact_topk(base: np.ndarray, queries: np.ndarray, k: int, batch: int = 128) -> np.ndarray:
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), batch):
        sims = queries[start : start + batch] @ base.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        out[start : start + batch] = np.take_along_axis(top, order, axis=1)
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = sum(len(np.intersect1d(f[:k], t)) for f, t in zip(found, truth))
    return hits / truth.size


# -- timing ---------------------------------------------------------------------------------------------------
def median_qps(run_once: Callable[[], int], repeats: int) -> float:
    """Median over ``repeats`` of (queries answered / seconds) for one call of run_once."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        answered = run_once()
        rates.append(answered / (time.perf_counter() - start))
    return statistics.median(rates)


def single_qps(search_one: Callable[[np.ndarray], Any], queries: np.ndarray, config: BenchConfig) -> float:
    limit = min(len(queries), config.single_queries)

    def run_once() -> int:
        deadline = time.perf_counter() + config.single_budget_s
        done = 0
        for q in queries[:limit]:
            search_one(q)
            done += 1
            if done >= 3 and time.perf_counter() > deadline:
                break
        return done

    search_one(queries[0])  # warm-up
    return median_qps(run_once, config.repeats)


def batched_qps(
    search_all: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, config: BenchConfig
) -> tuple[float, np.ndarray]:
    """(median queries/s, the ids of the first run); repeats only while a run is short."""
    start = time.perf_counter()
    ids = search_all(queries)
    rates = [len(queries) / (time.perf_counter() - start)]
    for _ in range(config.repeats - 1):
        if len(queries) / rates[0] > 20:  # a slow method (exact at 1M x 1024): one run is enough signal
            break
        start = time.perf_counter()
        search_all(queries)
        rates.append(len(queries) / (time.perf_counter() - start))
    return statistics.median(rates), ids


@dataclass
class Built:
    """An index and how to query it at a named setting."""

    index: Any
    build_s: float
    memory_mb: float
    settings: list[tuple[str, Any]]
    search_one: Callable[[Any, np.ndarray, Any], Any]
    search_all: Callable[[Any, np.ndarray, Any], np.ndarray]
    note: str = ""


def measure_build(build: Callable[[], Any]) -> tuple[Any, float, float]:
    trim_memory()
    before = rss_bytes()
    start = time.perf_counter()
    index = build()
    seconds = time.perf_counter() - start
    trim_memory()
    return index, seconds, (rss_bytes() - before) / 2**20


def _at(search: Callable[[Any, np.ndarray, Any], Any], index: Any, setting: Any) -> Callable[[np.ndarray], Any]:
    """``search`` of ``index`` at one setting, as a function of the queries alone."""
    return lambda q: search(index, q, setting)


def sweep(
    dim: int,
    method: str,
    built: Built,
    queries: np.ndarray,
    truth: np.ndarray,
    config: BenchConfig,
    log: Callable[[str], None],
    stop_above: float = 0.995,
) -> list[Row]:
    """Rows for the settings in order (cheap to costly); stops after recall passes ``stop_above``."""
    rows: list[Row] = []
    for name, setting in built.settings:
        qps_b, ids = batched_qps(_at(built.search_all, built.index, setting), queries, config)
        recall = recall_at_k(np.asarray(ids), truth)
        qps_s = single_qps(_at(built.search_one, built.index, setting), queries, config)
        row = Row(
            dim,
            method,
            name,
            round(recall, 4),
            round(qps_s, 1),
            round(qps_b, 1),
            round(built.build_s, 1),
            round(built.memory_mb, 1),
            built.note,
        )
        log(f"  {method} {name}: recall {recall:.4f}  single {qps_s:.1f}/s  batched {qps_b:.1f}/s")
        rows.append(row)
        if recall >= stop_above:
            break
    return rows


# -- methods --------------------------------------------------------------------------------------------------
def build_exact(base: np.ndarray, config: BenchConfig, threads: int) -> Built:
    k = config.k

    def one(_: Any, q: np.ndarray, __: Any) -> np.ndarray:
        sims = base @ q
        return np.argpartition(-sims, k - 1)[:k]

    def all_(_: Any, qs: np.ndarray, __: Any) -> np.ndarray:
        with blas_threads(threads):
            return exact_topk(base, qs, k)

    def one_1thread(index: Any, q: np.ndarray, s: Any) -> np.ndarray:
        return one(index, q, s)

    return Built(
        None,
        0.0,
        base.nbytes / 2**20,
        [("numpy matmul, float32", None)],
        one_1thread,
        all_,
        "memory: the float32 matrix",
    )


def scann_variant_params(variant: str, n: int, dim: int, k: int) -> dict[str, Any]:
    """Build parameters of a named ScaNN variant ("production" = what the shard builds for this size)."""
    if variant == "production":
        from services.search.shard import scann_parameters

        return scann_parameters(n, dim, k)
    # custom:leaves=2000,lts=100,dpb=4,thr=0.2,reorder=200,q=int8,spherical=1,proj=256,lts_sweep=25/50/100
    if variant.startswith("custom:"):
        params: dict[str, Any] = {"brute_force": False}
        for item in variant.split(":", 1)[1].split(","):
            key, value = item.split("=")
            if key.endswith("_sweep"):
                params[key] = [float(x) for x in value.split("/")]
            else:
                params[key] = value if key == "q" else float(value)
        return params
    raise ValueError(f"unknown ScaNN variant {variant!r}")


def build_scann(base: np.ndarray, config: BenchConfig, threads: int, variant: str) -> Built:
    from scann import scann_ops_pybind
    from scann.scann_ops.py.scann_builder import ReorderType

    from echovids.settings import get_settings
    from echovids.vectors import int8_rows
    from services.search.matching import Int8Frames
    from services.search.shard import rescored

    k = config.k
    n, dim = base.shape
    projection: Projection | None = None
    if variant == "brute-force":

        def make() -> Any:
            return scann_ops_pybind.builder(base, k, "dot_product").score_brute_force().build(), None

        settings: list[tuple[str, Any]] = [("brute force (float32)", (-1, -1))]
        label = "scann brute force"
    else:
        p = scann_variant_params(variant, n, dim, k)
        leaves, dpb = int(p["leaves"]), int(p["dpb"])
        reorder = int(p["reorder"])
        # "i8": as a shard searches (services/search/shard.py): no reordering in ScaNN, its candidates re-scored
        # from int8 codes of the rows (a shard maps them from its snapshot; here they are made with the index);
        # "f16": from a float16 copy, as shards did before the codes.
        q_name = str(p.get("q", "i8" if variant == "production" else ""))
        quant = {"int8": ReorderType.INT8, "bf16": ReorderType.BFLOAT16}.get(q_name, ReorderType.FLOAT32)
        # "proj": the rows projected on that many principal axes, as a shard keeps them (0: as they are); the
        # recall is still against the exact search of the rows themselves, as every peer's.
        axes = int(p.get("proj", get_settings().search_projection_axes if variant == "production" else 0))
        if 0 < axes < dim - 1:
            projection = fitted_projection(base, axes)

        def make() -> Any:
            # A shard indexes its coded rows: ScaNN gets them dequantised, and re-scores from the codes.
            data, codes = base, None
            if projection is not None:
                codes = Int8Frames(*int8_rows(projection(base)))
                data = codes.codes.astype(np.float32) * codes.scales[:, None]
            builder = scann_ops_pybind.builder(data, k, "dot_product").set_n_training_threads(threads)
            tree_kw: dict[str, Any] = {
                "training_sample_size": int(min(n, p.get("sample", 250_000))),
                "spherical": bool(p.get("spherical", False)),
            }
            if p.get("soar"):
                tree_kw["soar_lambda"] = float(p["soar"])
            builder = builder.tree(num_leaves=leaves, num_leaves_to_search=int(p["lts"]), **tree_kw)
            builder = builder.score_ah(dpb, anisotropic_quantization_threshold=float(p["thr"]))
            if q_name == "f16":
                return builder.build(), base.astype(np.float16)
            if q_name == "i8":
                return builder.build(), codes if codes is not None else Int8Frames(*int8_rows(base))
            return builder.reorder(reorder, quantize=quant).build(), None

        lts0 = int(p["lts"])
        default_sweep = [max(1, lts0 // 4), max(1, lts0 // 2), lts0, min(leaves, lts0 * 2)]
        searched = sorted({int(x) for x in p.get("lts_sweep", default_sweep)})
        reorders = sorted({int(x) for x in p.get("reorder_sweep", [reorder])})
        settings = [(f"search {lts}/{leaves} leaves, reorder {r}", (lts, r)) for lts in searched for r in reorders]
        label = (
            f"tree {leaves} leaves + AH {dpb} dims/block thr {p['thr']} + reorder {reorder} "
            f"({q_name or 'float32'})"
            + (f" + SOAR {p['soar']}" if p.get("soar") else "")
            + (f", rows projected on {axes} axes" if projection is not None else "")
        )

    (searcher, stored), seconds, memory = measure_build(make)
    searcher.set_num_threads(threads)

    def one(s: Any, q: np.ndarray, setting: tuple[int, int]) -> Any:
        lts, r = setting
        if projection is not None:
            q = projection(q[None])[0]
        if stored is not None:
            rows, sims = s.search(q, final_num_neighbors=r, leaves_to_search=lts)
            return rescored(stored, q[None], rows[None], sims[None], k)[0][0]
        return s.search(q, final_num_neighbors=k, pre_reorder_num_neighbors=r, leaves_to_search=lts)

    def all_(s: Any, qs: np.ndarray, setting: tuple[int, int]) -> np.ndarray:
        lts, r = setting
        batch = max(16, len(qs) // threads // 4)
        if projection is not None:
            qs = projection(qs)
        if stored is not None:
            rows, sims = s.search_batched_parallel(qs, final_num_neighbors=r, batch_size=batch, leaves_to_search=lts)
            return rescored(stored, qs, rows, sims, k)[0]
        kw = {"leaves_to_search": lts, "pre_reorder_num_neighbors": r} if lts > 0 else {}
        ids, _ = s.search_batched_parallel(qs, final_num_neighbors=k, batch_size=batch, **kw)
        return ids

    return Built(searcher, seconds, memory, settings, one, all_, label)


def _hnsw_build(
    add: Callable[[np.ndarray], None], base: np.ndarray, config: BenchConfig, log: Callable[[str], None]
) -> tuple[float, float | None]:
    """Insert rows in chunks; (seconds, estimated total) - stops early when the estimate passes the budget."""
    n = len(base)
    probe = min(n, max(20_000, n // 50))
    start = time.perf_counter()
    half = probe // 2
    add(base[:half])
    t_half = time.perf_counter()
    add(base[half:probe])
    t_probe = time.perf_counter()
    if probe == n:
        return t_probe - start, None
    rate = (probe - half) / (t_probe - t_half)  # rows/s at the probe's size; the rate falls as log(size) grows
    estimate = (t_probe - start) + (n - probe) / rate * math.log(n) / math.log(probe)
    log(f"  HNSW: {probe} rows in {t_probe - start:.1f} s, estimated total {estimate:.0f} s")
    if estimate > config.hnsw_budget_s:
        return t_probe - start, estimate
    for lo in range(probe, n, 100_000):
        add(base[lo : lo + 100_000])
    return time.perf_counter() - start, None


HNSW_EF = (16, 32, 64, 128, 256, 512)


def build_faiss_hnsw(base: np.ndarray, config: BenchConfig, threads: int, log: Callable[[str], None]) -> Built:
    import faiss

    faiss.omp_set_num_threads(threads)
    n, dim = base.shape
    estimate: list[float | None] = [None]

    def make() -> Any:
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        _, estimate[0] = _hnsw_build(index.add, base, config, log)
        return index

    index, seconds, memory = measure_build(make)
    settings = [(f"M {config.hnsw_m}, efC {config.hnsw_ef_construction}, efSearch {ef}", ef) for ef in HNSW_EF]
    return _faiss_built(
        index,
        seconds,
        memory,
        settings,
        threads,
        config.k,
        estimate[0],
        n,
        # faiss's bundled __init__.pyi lacks the SWIG class SearchParametersHNSW (there at runtime since 1.7.3)
        lambda ef: faiss.SearchParametersHNSW(efSearch=ef),  # type: ignore[attr-defined]
    )


def build_faiss_ivfpq(base: np.ndarray, config: BenchConfig, threads: int) -> Built:
    import faiss

    faiss.omp_set_num_threads(threads)
    n, dim = base.shape
    nlist = max(16, round(math.sqrt(n)))
    m = dim // 8 if dim % 8 == 0 else dim // 4  # 8 dims per 8-bit sub-quantiser (ScaNN's AH uses 2-4 per 4 bits)

    def make() -> Any:
        quantiser = faiss.IndexFlatIP(dim)
        ivf = faiss.IndexIVFPQ(quantiser, dim, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(config.seed)
        ivf.train(base[rng.choice(n, size=min(n, max(50 * nlist, 100_000)), replace=False)])
        index = faiss.IndexRefineFlat(ivf)  # float32 reorder, as ScaNN's reorder stage
        index.add(base)  # (faiss's Python wrapper keeps ivf and the quantiser alive with the index)
        return index

    index, seconds, memory = measure_build(make)
    settings = [
        (f"nlist {nlist}, PQ{m}x8, nprobe {p}, refine x{f}", (p, f)) for p in (8, 16, 32, 64, 128) for f in (4, 16)
    ]
    settings.sort(key=lambda s: s[1][0] * (1 + s[1][1] / 16))

    def params(setting: tuple[int, int]) -> Any:
        nprobe, factor = setting
        # faiss's bundled stubs give the SWIG parameter classes no keyword constructors (SWIG's wrappers take them)
        return faiss.IndexRefineSearchParameters(  # type: ignore[call-arg]
            k_factor=factor,
            base_index_params=faiss.SearchParametersIVF(nprobe=nprobe),  # type: ignore[call-arg]
        )

    return _faiss_built(index, seconds, memory, settings, threads, config.k, None, n, params)


def _faiss_built(
    index: Any,
    seconds: float,
    memory: float,
    settings: list[tuple[str, Any]],
    threads: int,
    k: int,
    estimate: float | None,
    n: int,
    make_params: Callable[[Any], Any],
) -> Built:
    import faiss

    def one(ix: Any, q: np.ndarray, s: Any) -> Any:
        faiss.omp_set_num_threads(1)
        return ix.search(q[None, :], k, params=make_params(s))[1]

    def all_(ix: Any, qs: np.ndarray, s: Any) -> np.ndarray:
        faiss.omp_set_num_threads(threads)
        return ix.search(qs, k, params=make_params(s))[1]

    note = ""
    if estimate is not None:
        note = f"build stopped at {index.ntotal} of {n} rows; est. total {estimate:.0f} s"
    return Built(index, estimate or seconds, memory, settings, one, all_, note)


def build_hnswlib(base: np.ndarray, config: BenchConfig, threads: int, log: Callable[[str], None]) -> Built:
    import hnswlib

    n, dim = base.shape
    estimate: list[float | None] = [None]

    def make() -> Any:
        index = hnswlib.Index(space="ip", dim=dim)
        index.init_index(
            max_elements=n, ef_construction=config.hnsw_ef_construction, M=config.hnsw_m, random_seed=config.seed
        )
        index.set_num_threads(threads)
        offset = [0]

        def add(rows: np.ndarray) -> None:
            index.add_items(rows, np.arange(offset[0], offset[0] + len(rows)), num_threads=threads)
            offset[0] += len(rows)

        _, estimate[0] = _hnsw_build(add, base, config, log)
        return index

    index, seconds, memory = measure_build(make)
    settings = [(f"M {config.hnsw_m}, efC {config.hnsw_ef_construction}, ef {ef}", ef) for ef in HNSW_EF]
    k = config.k

    def one(ix: Any, q: np.ndarray, ef: int) -> Any:
        ix.set_ef(max(ef, k))
        return ix.knn_query(q, k=k, num_threads=1)[0]

    def all_(ix: Any, qs: np.ndarray, ef: int) -> np.ndarray:
        ix.set_ef(max(ef, k))
        return ix.knn_query(qs, k=k, num_threads=threads)[0]

    note = ""
    if estimate[0] is not None:
        note = f"build stopped at {index.get_current_count()} of {n} rows; est. total {estimate[0]:.0f} s"
    return Built(index, estimate[0] or seconds, memory, settings, one, all_, note)


# -- the benchmark --------------------------------------------------------------------------------------------
def run(config: BenchConfig, log: Callable[[str], None] = print) -> Report:
    started = time.perf_counter()
    threads = config.resolved_threads()
    unknown = set(config.methods) - set(ALL_METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {', '.join(ALL_METHODS)}")
    missing = missing_modules(method_needs(config.methods))
    if missing:
        raise ModuleNotFoundError(f"bench search needs {', '.join(missing)}: {install_hint(missing)}")
    with blas_threads(threads):
        base_full, queries_full, dataset = load_dataset(config)
    log(
        f"data: {dataset['source']}, {dataset['n']} x {dataset['stored_dim']}, {dataset['queries']} queries "
        f"({time.perf_counter() - started:.0f} s)"
    )
    report = Report(
        config={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        machine={**machine_info(), "libraries": _library_versions()},
        dataset=dataset,
    )
    report.config["threads"] = threads
    projected: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for dim in config.dims:
        if dim < base_full.shape[1]:
            with blas_threads(threads):
                projected[dim] = pca_project(base_full, queries_full, dim, config.seed)
    for dim in sorted(config.dims, reverse=True):
        if dim >= base_full.shape[1]:
            base, queries = base_full, queries_full
        else:
            base, queries = projected.pop(dim)
        log(f"dim {dim}: exact ground truth")
        report.rows += run_dim(base, queries, dim, config, threads, log)
        del base, queries
        if dim >= base_full.shape[1]:
            del base_full, queries_full
            base_full = np.empty((0, dim), dtype=np.float32)  # free the stored-dimension set
        trim_memory()
    report.summary = summarise(report.rows, config.target_recall)
    report.elapsed_s = round(time.perf_counter() - started, 1)
    return report


def run_dim(
    base: np.ndarray, queries: np.ndarray, dim: int, config: BenchConfig, threads: int, log: Callable[[str], None]
) -> list[Row]:
    start = time.perf_counter()
    with blas_threads(threads):
        truth = exact_topk(base, queries, config.k)
    truth_s = time.perf_counter() - start
    rows: list[Row] = []
    log(f"  ground truth in {truth_s:.1f} s")
    if "exact" in config.methods:
        exact_built = build_exact(base, config, threads)
        with blas_threads(1):
            qps_s = single_qps(lambda q: exact_built.search_one(None, q, None), queries, config)
        if truth_s > 20:  # computing the ground truth was one batched exact run: don't pay for it twice
            qps_b, ids = len(queries) / truth_s, truth
        else:
            qps_b, ids = batched_qps(lambda q: exact_built.search_all(None, q, None), queries, config)
        rows.append(
            Row(
                dim,
                "exact",
                exact_built.settings[0][0],
                round(recall_at_k(ids, truth), 4),
                round(qps_s, 2),
                round(qps_b, 1),
                0.0,
                round(exact_built.memory_mb, 1),
                exact_built.note,
            )
        )
        log(f"  exact: single {qps_s:.2f}/s  batched {qps_b:.1f}/s")
    builders: list[tuple[str, Callable[[], Built]]] = []
    if "scann" in config.methods:
        for variant in config.scann_variants:
            builders.append(
                (
                    f"scann {variant}" if variant.startswith("custom") else f"scann ({variant})",
                    functools.partial(build_scann, base, config, threads, variant),
                )
            )
    if "faiss-ivfpq" in config.methods:
        builders.append(("faiss IVF-PQ", lambda: build_faiss_ivfpq(base, config, threads)))
    if "faiss-hnsw" in config.methods:
        builders.append(("faiss HNSW", lambda: build_faiss_hnsw(base, config, threads, log)))
    if "hnswlib" in config.methods:
        builders.append(("hnswlib", lambda: build_hnswlib(base, config, threads, log)))
    for method, make in builders:
        log(f"  building {method}")
        built = make()
        log(f"  {method}: built in {built.build_s:.1f} s, {built.memory_mb:.0f} MB  {built.note}")
        if built.note.startswith("build stopped"):
            rows.append(
                Row(
                    dim,
                    method,
                    f"M {config.hnsw_m}, efC {config.hnsw_ef_construction}",
                    None,
                    None,
                    None,
                    round(built.build_s, 1),
                    None,
                    built.note,
                )
            )
        else:
            rows += sweep(dim, method, built, queries, truth, config, log)
        del built
        trim_memory()
    return rows


def summarise(rows: list[Row], target: float) -> list[dict[str, Any]]:
    """Per dimension and method: the fastest setting at recall >= target, and ScaNN's speed over it."""
    out: list[dict[str, Any]] = []
    for dim in sorted({r.dim for r in rows}, reverse=True):
        exact = next((r for r in rows if r.dim == dim and r.method == "exact"), None)
        best: dict[str, Row] = {}
        for r in rows:
            if r.dim != dim or r.recall is None or r.recall < target or r.method == "exact":
                continue
            if r.method not in best or (r.qps_batched or 0) > (best[r.method].qps_batched or 0):
                best[r.method] = r
        scann = [r for m, r in best.items() if m.startswith("scann") and "brute" not in m]
        top_scann = max(scann, key=lambda r: r.qps_batched or 0, default=None)
        for method, r in best.items():
            entry: dict[str, Any] = {
                "dim": dim,
                "method": method,
                "params": r.params,
                "recall": r.recall,
                "qps_single": r.qps_single,
                "qps_batched": r.qps_batched,
            }
            if exact and exact.qps_single and exact.qps_batched:
                entry["speedup_vs_exact_single"] = round((r.qps_single or 0) / exact.qps_single, 1)
                entry["speedup_vs_exact_batched"] = round((r.qps_batched or 0) / exact.qps_batched, 1)
            if top_scann is not None and not method.startswith("scann"):
                entry["scann_over_peer_single"] = round((top_scann.qps_single or 0) / (r.qps_single or 1), 2)
                entry["scann_over_peer_batched"] = round((top_scann.qps_batched or 0) / (r.qps_batched or 1), 2)
            out.append(entry)
    return out


# -- output ---------------------------------------------------------------------------------------------------
def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def to_markdown(report: Report) -> str:
    lines = [
        "| dim | method | setting | recall@10 | q/s single | q/s batched | build s | memory MB | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.rows:
        build = _fmt(r.build_s, 1) if not r.note.startswith("build stopped") else f"est. ≥{_fmt(r.build_s)}"
        lines.append(
            f"| {r.dim} | {r.method} | {r.params} | {_fmt(r.recall, 3)} | {_fmt(r.qps_single, 1)} | "
            f"{_fmt(r.qps_batched)} | {build} | {_fmt(r.memory_mb)} | {r.note} |"
        )
    lines += [
        "",
        f"Fastest setting per method at recall@10 >= {report.config['target_recall']}:",
        "",
        "| dim | method | setting | recall@10 | q/s single | q/s batched | x exact single | x exact batched "
        "| ScaNN / peer single | ScaNN / peer batched |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in report.summary:
        lines.append(
            f"| {s['dim']} | {s['method']} | {s['params']} | {s['recall']:.3f} | {_fmt(s['qps_single'], 1)} "
            f"| {_fmt(s['qps_batched'])} | {s.get('speedup_vs_exact_single', '-')} | "
            f"{s.get('speedup_vs_exact_batched', '-')} | {s.get('scann_over_peer_single', '-')} | "
            f"{s.get('scann_over_peer_batched', '-')} |"
        )
    return "\n".join(lines)


def write_report(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    path.write_text(json.dumps({"date": stamp, **report.to_dict()}, indent=2))
