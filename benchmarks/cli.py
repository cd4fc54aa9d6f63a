"""`echovids bench <what>`: each benchmark's code is in benchmarks/<what>.py; figures in docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from benchmarks.search import BenchConfig
from echovids.harness import install_hint, missing_modules
from echovids.settings import get_settings

bench_app = typer.Typer(help="Benchmarks (figures in docs/benchmarks.md).", no_args_is_help=True)

# What a running stack needs (`echovids serve`: the embedder's model runtime, the search's index).
STACK_NEEDS = {"scann": "search", "ai_edge_litert": "embedder"}


def require(bench: str, needs: dict[str, str], advice: str = "") -> None:
    """Exit at once, saying what to install, when a module the benchmark imports is missing."""
    missing = missing_modules(needs)
    if missing:
        typer.echo(
            f"error: bench {bench} needs {', '.join(missing)}, not installed: {install_hint(missing)}{advice}", err=True
        )
        raise typer.Exit(1)


@bench_app.command("ingest")
def bench_ingest(
    files: Annotated[int, typer.Option(min=1, help="generated audio files")] = 24,
    seconds: Annotated[float, typer.Option(min=1, help="length of each file")] = 150.0,
    records: Annotated[int, typer.Option(min=0, help="AudioSet records to import (0: skip)")] = 2000,
    redis_url: Annotated[str | None, typer.Option(help="Redis to use (default: embedded)")] = None,
) -> None:
    """Ingest a folder of generated files (h of audio per minute) and import AudioSet records (records/s)."""
    require("ingest", {**STACK_NEEDS, "tensorflow": "embedder"})  # tensorflow writes the AudioSet records
    from benchmarks.ingest import run

    for key, value in run(files=files, seconds=seconds, records=records, redis_url=redis_url).items():
        typer.echo(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")


@bench_app.command("embed")
def bench_embed(
    seconds: Annotated[float, typer.Option(help="generated audio for the per-stage figures, seconds")] = 600.0,
    e2e_seconds: Annotated[float, typer.Option(help="audio for the end-to-end runs, seconds")] = 3600.0,
    repeats: Annotated[int, typer.Option(min=1, help="runs per figure (the median is reported)")] = 5,
    model: Annotated[list[str] | None, typer.Option(help="yamnet | vggish-stub, repeated (default both)")] = None,
    batch: Annotated[list[int] | None, typer.Option(help="frames per embed call, repeated (default 1 16 64)")] = None,
    threads: Annotated[int | None, typer.Option(help="YAMNet interpreters (default ECHOVIDS_TFLITE_THREADS)")] = None,
) -> None:
    """Embedder speed: decode, front end, model (batch 1/16/64) and end to end, with peak memory."""
    require("embed", {"ai_edge_litert": "embedder", "tensorflow": "embedder"})
    from benchmarks.embed import BATCHES, MODELS, EmbedBenchConfig, run, table

    config = EmbedBenchConfig(
        seconds=seconds,
        e2e_seconds=e2e_seconds,
        repeats=repeats,
        models=tuple(model or MODELS),
        batches=tuple(batch or BATCHES),
        threads=threads or get_settings().tflite_threads,
    )
    rows, machine = run(config, log=lambda line: typer.echo(line, err=True))
    typer.echo(f"machine: {machine}")
    typer.echo(table(rows))


@bench_app.command("search")
def bench_search(
    n: Annotated[int, typer.Option(min=1000, help="library frame vectors")] = 1_000_000,
    dim: Annotated[
        list[int] | None, typer.Option(help="index dimension, repeated; below 1024 = PCA projection (default 1024)")
    ] = None,
    queries: Annotated[
        int, typer.Option(min=10, help="query vectors (recall and batched timing)")
    ] = BenchConfig.queries,
    method: Annotated[
        list[str] | None,
        typer.Option(help="exact | scann | faiss-hnsw | faiss-ivfpq | hnswlib, repeated (default all)"),
    ] = None,
    scann: Annotated[
        list[str] | None,
        typer.Option(
            help="ScaNN variants: production | brute-force | custom:leaves=..,lts=..,dpb=..,thr=..,reorder=..,q=int8",
        ),
    ] = None,
    threads: Annotated[int, typer.Option(min=0, help="threads for builds and batched search (0: all CPUs)")] = 0,
    repeats: Annotated[int, typer.Option(min=1, help="timing runs (the median is reported)")] = 3,
    source: Annotated[str, typer.Option(help="auto | real | synthetic")] = "auto",
    seed: Annotated[
        int, typer.Option(help="the synthetic set's seed (or which real frames are held out as queries)")
    ] = BenchConfig.seed,
    hnsw_budget: Annotated[
        float, typer.Option(help="seconds per HNSW build before it is estimated instead")
    ] = BenchConfig.hnsw_budget_s,
    out: Annotated[Path | None, typer.Option(help="write the full report as JSON here")] = None,
) -> None:
    """ANN search: ScaNN vs FAISS (HNSW, IVF-PQ), hnswlib and exact: build, memory, queries/s, recall@10."""
    from benchmarks.search import ALL_METHODS, method_needs, run, to_markdown, write_report

    methods = tuple(method or ALL_METHODS)
    require("search", method_needs(methods), "; or leave those methods out with --method")
    config = BenchConfig(
        n=n,
        dims=tuple(dim or (1024,)),
        queries=queries,
        methods=methods,
        threads=threads,
        repeats=repeats,
        source=source,
        seed=seed,
        hnsw_budget_s=hnsw_budget,
        scann_variants=tuple(scann or BenchConfig.scann_variants),
        data_dir=get_settings().data_dir,
    )
    report = run(config, log=lambda line: typer.echo(line, err=True))
    if out is not None:
        write_report(report, out)
    m = report.machine
    typer.echo(
        f"machine: {m['nproc']} CPUs, {m['cpu']}; threads {report.config['threads']}; "
        f"data: {report.dataset['source']}, n={report.dataset['n']}; {report.elapsed_s:.0f} s"
    )
    typer.echo(to_markdown(report))


@bench_app.command("latency")
def bench_latency(
    frames: Annotated[int, typer.Option(min=1000, help="library frames (10 s clips of 20 frames)")] = 1_000_000,
    shards: Annotated[int, typer.Option(min=1)] = 1,
    queries: Annotated[int, typer.Option(min=5)] = 50,
    workdir: Annotated[Path | None, typer.Option(help="keep the library here; a second run reuses it")] = None,
    text: Annotated[
        str | None, typer.Option(help='a search by description instead of the 10 s recording: "a dog barking"')
    ] = None,
    shard_only: Annotated[
        bool, typer.Option(help="with --text: time one shard's text search in this process, no stack")
    ] = False,
) -> None:
    """End-to-end latency of a 10 s query, or of a --text query (submit to done), against a large library,
    availability cached."""
    import dataclasses
    import json

    if shard_only:
        from benchmarks.latency import text_shard_ms

        typer.echo(json.dumps(text_shard_ms(text or "a dog barking", frames=frames, queries=queries), indent=2))
        return
    require("latency", STACK_NEEDS)
    from benchmarks.latency import run

    typer.echo(
        json.dumps(
            dataclasses.asdict(run(frames=frames, shards=shards, queries=queries, workdir=workdir, text=text)), indent=2
        )
    )


@bench_app.command("scale")
def bench_scale(
    frames: Annotated[int, typer.Option(min=1000, help="library frames (10 s clips)")] = 1_000_000,
    shards: Annotated[int, typer.Option(min=1)] = 1,
    processes: Annotated[
        int | None, typer.Option(min=1, help="search processes (default ECHOVIDS_SEARCH_PROCESSES)")
    ] = None,
    queries: Annotated[int, typer.Option(min=5)] = 50,
    workdir: Annotated[Path | None, typer.Option(help="keep the library here; a second run reuses it")] = None,
    pinned: Annotated[
        bool, typer.Option(help="one search worker per shard, each holding only its own (ECHOVIDS_SEARCH_PINNED)")
    ] = False,
    flavour: Annotated[
        str,
        typer.Option(
            help="yamnet: 1024-d frames every 0.48 s with landmarks and class scores, as ingested audio; audioset: "
            "128-d VGGish features every 0.96 s, as `import-audioset` stores them"
        ),
    ] = "yamnet",
) -> None:
    """Memory per frame (PSS of the search processes), recall@10, start time and latency at a library's size;
    the last line is one JSON object."""
    import dataclasses
    import json

    require("scale", {**STACK_NEEDS, "psutil": "bench"})
    from benchmarks.latency import FLAVOURS
    from benchmarks.scale import run

    if flavour not in FLAVOURS:
        raise typer.BadParameter(f"one of {', '.join(FLAVOURS)}", param_hint="--flavour")
    report = run(
        frames=frames,
        shards=shards,
        processes=processes,
        queries=queries,
        workdir=workdir,
        pinned=pinned,
        flavour=FLAVOURS[flavour],
        log=lambda line: typer.echo(line, err=True),
    )
    typer.echo(json.dumps(dataclasses.asdict(report)))


@bench_app.command("shard-search")
def bench_shard_search(
    workdir: Annotated[Path, typer.Option(help="a library `bench scale` or `bench latency` built with --workdir")],
    shard: Annotated[int, typer.Option(min=0)] = 0,
    queries: Annotated[int, typer.Option(min=1)] = 100,
    passes: Annotated[int, typer.Option(min=1, help="times each query is timed")] = 3,
) -> None:
    """One shard's search in-process (no Celery, Redis or embedder): ms a 10 s query; the last line is JSON."""
    import dataclasses
    import json

    from benchmarks.shard_search import run

    data_dir = workdir / "data"
    if not (data_dir / "shards" / str(shard)).is_dir():
        raise typer.BadParameter(f"no shard {shard} under {data_dir}", param_hint="--workdir")
    typer.echo(json.dumps(dataclasses.asdict(run(data_dir, shard, queries, passes))))


@bench_app.command("audioset")
def bench_audioset(
    segments: Annotated[int, typer.Option(min=1, help="segments of the synthetic release (10 s each)")] = 200_000,
    workdir: Annotated[Path | None, typer.Option(help="write the release and the library here")] = None,
) -> None:
    """`echovids import-audioset` of a synthetic AudioSet release (TFRecords as Google ships them) into a fresh
    stack: segments/s read and sent, segments/s until all are indexed, the importer's peak RSS; the last line is
    one JSON object."""
    import dataclasses
    import json

    require("audioset", {**STACK_NEEDS, "tensorflow": "embedder", "psutil": "bench"})
    from benchmarks.audioset_import import run

    report = run(segments=segments, workdir=workdir, log=lambda line: typer.echo(line, err=True))
    typer.echo(json.dumps(dataclasses.asdict(report)))


@bench_app.command("feature-hop")
def bench_feature_hop(
    clips: Annotated[int, typer.Option(min=100, help="library clips of 11 features (0.96 s each)")] = 20_000,
    queries: Annotated[int, typer.Option(min=10)] = 300,
    query_frames: Annotated[int, typer.Option(min=2, help="query frames at 0.48 s")] = 8,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """AudioSet's features stored at their 0.96 s hop against doubled to 0.48 s: same clips, same queries, rows,
    top-1, on time, frame voting beside; a table, then one JSON object."""
    import dataclasses
    import json

    from benchmarks.feature_hop import run, table

    report = run(clips=clips, queries=queries, query_frames=query_frames, seed=seed)
    typer.echo(table(report))
    typer.echo(json.dumps(dataclasses.asdict(report)))


@bench_app.command("verify")
def bench_verify(
    queries: Annotated[int, typer.Option(min=5, help="queries of each kind (copies, new sounds)")] = 30,
    repeats: Annotated[int, typer.Option(min=1, help="rounds of on/off (each figure's median per round)")] = 3,
    stored: Annotated[str, typer.Option(help="how the library's audio is stored: wav | ogg")] = "wav",
) -> None:
    """What the waveform verification of the merge costs a query (in-process, on against off, ESC-10 library)."""
    import json

    if stored not in ("wav", "ogg"):
        raise typer.BadParameter("wav or ogg", param_hint="--stored")
    require("verify", STACK_NEEDS)
    from benchmarks.verify import run

    typer.echo(json.dumps(run(queries=queries, repeats=repeats, stored=stored), indent=2))


@bench_app.command("load")
def bench_load(
    clips: Annotated[int, typer.Option(min=100, help="synthetic library clips (10 s, 20 frames each)")] = 50_000,
    clients: Annotated[list[int] | None, typer.Option(help="concurrent clients per level, repeated")] = None,
    seconds: Annotated[float, typer.Option(min=1, help="how long each level runs")] = 60.0,
    query_s: Annotated[float, typer.Option(min=1, help="length of the query recording")] = 5.0,
    shards: Annotated[int, typer.Option(min=1)] = 1,
    workdir: Annotated[Path | None, typer.Option(help="keep the library here; a second run reuses it")] = None,
) -> None:
    """Throughput, p50/p95/p99, errors and stack memory under N concurrent clients; the saturation point."""
    import dataclasses
    import json

    require("load", {**STACK_NEEDS, "psutil": "bench"})
    from benchmarks.load import run, table

    report = run(
        clips=clips,
        clients=tuple(clients or (8, 32, 64)),
        seconds=seconds,
        query_s=query_s,
        shards=shards,
        workdir=workdir,
        log=lambda line: typer.echo(line, err=True),
    )
    typer.echo(table(report))
    typer.echo(json.dumps(dataclasses.asdict(report)))


@bench_app.command("clip-memory")
def bench_clip_memory(
    minutes: Annotated[list[float] | None, typer.Option(help="lengths of the clips, repeated")] = None,
    workdir: Annotated[Path | None, typer.Option(help="keep the generated files here")] = None,
) -> None:
    """Peak RSS of one library clip's ingest (decode, embed, landmarks) by its length, each in a fresh process."""
    import json

    require("clip-memory", {"ai_edge_litert": "embedder"})
    from benchmarks.clip_memory import run

    for row in run(minutes or [30.0, 180.0], workdir):
        typer.echo(json.dumps(row))


@bench_app.command("landmarks")
def bench_landmarks(
    hours: Annotated[float, typer.Option(min=0.1, help="audio the large index stands for")] = 1000.0,
    queries: Annotated[int, typer.Option(min=5)] = 50,
) -> None:
    """Landmark index: extraction hashes/s on ESC-10 audio, query latency over an index of HOURS of audio."""
    import json

    from benchmarks.landmarks import as_dict, run

    typer.echo(json.dumps(as_dict(run(hours=hours, queries=queries)), indent=2))


@bench_app.command("hops")
def bench_hops(
    source: Annotated[
        list[Path] | None,
        typer.Option(help="checkout whose stack is measured, repeated: base first (default: this one)"),
    ] = None,
    files: Annotated[int, typer.Option(min=1, help="library files ingested")] = 40,
    searches: Annotated[int, typer.Option(min=1, help="sequential searches counted")] = 100,
    clients: Annotated[int, typer.Option(min=1, help="concurrent clients")] = 8,
    per_client: Annotated[int, typer.Option(min=1, help="searches per concurrent client")] = 10,
    rounds: Annotated[int, typer.Option(min=1, help="A/B rounds, order alternating (medians reported)")] = 1,
    idle: Annotated[float, typer.Option(min=1, help="seconds of idle traffic measured, to subtract")] = 15.0,
    drain: Annotated[float, typer.Option(min=0, help="seconds after the last search (delayed tasks run)")] = 12.0,
    library: Annotated[Path | None, typer.Option(help="folder of audio files (default: ESC-10)")] = None,
    workdir: Annotated[Path | None, typer.Option(help="keep the stacks' data here")] = None,
) -> None:
    """Redis commands and Celery tasks per cached search, and p50/p95 under concurrent clients, per source tree."""
    import dataclasses
    import json

    from benchmarks.hops import DEFAULT_LIBRARY, ROOT, run, table

    report = run(
        sources=source or [ROOT],
        files=files,
        searches=searches,
        clients=clients,
        per_client=per_client,
        rounds=rounds,
        idle_s=idle,
        drain_s=drain,
        library=library or DEFAULT_LIBRARY,
        workdir=workdir,
        log=lambda line: typer.echo(line, err=True),
    )
    typer.echo(table(report))
    typer.echo(json.dumps(dataclasses.asdict(report)))
