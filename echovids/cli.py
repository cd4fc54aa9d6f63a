"""The `echovids` command line: serve, worker, ingest, search, reindex-classes."""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from echovids.clip_audio import MEDIA_TYPES
from echovids.settings import get_settings

app = typer.Typer(
    help="Echovids: audio-by-example search.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# The audio files `echovids ingest` picks out of a folder: every type the library stores and serves.
AUDIO_SUFFIXES = frozenset(MEDIA_TYPES)


def _layer_above(module: str) -> Any:
    """A module of a layer above this package (a service's worker entry, evaluation/, benchmarks/), loaded by name
    when the command that needs it runs: echovids/ imports none of them, so a worker never loads another's code."""
    return importlib.import_module(module)


@app.command()
def serve() -> None:
    """Run everything on one machine: Redis (embedded unless configured), workers and the gateway."""
    from echovids.supervisor import serve as run

    raise typer.Exit(run(get_settings()))


@app.command()
def worker(
    service: Annotated[str, typer.Argument(help="embedder | search | availability")],
    shard: Annotated[list[int] | None, typer.Option(help="search: the shard(s) to serve (default all)")] = None,
    merge: Annotated[bool, typer.Option(help="search: also run the merge step")] = True,
    concurrency: Annotated[
        int | None,
        typer.Option(help="worker processes (threads for an embedder under ECHOVIDS_EMBEDDER_POOL=threads)"),
    ] = None,
    loglevel: Annotated[str, typer.Option()] = "INFO",
) -> None:
    """Run one service's Celery worker on its own queue(s): the service's own entry, services/<service>/worker.py."""
    from echovids import queues

    if service not in queues.SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; one of {', '.join(queues.SERVICES)}")
    # The service's entry does its own setup (its tasks, its queues, what it preloads).
    entry = _layer_above(f"services.{service}.worker")
    entry.run(shards=shard, merge=merge, concurrency=concurrency, loglevel=loglevel)


@app.command()
def beat(loglevel: Annotated[str, typer.Option()] = "INFO") -> None:
    """Run Celery beat: sends the periodic tasks of echovids.schedule (run exactly one per deployment)."""
    from echovids.celery_app import get_celery
    from echovids.schedule import beat_schedule

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    celery = get_celery()
    celery.conf.beat_schedule = beat_schedule(settings)
    celery.start(
        [
            "beat",
            "--loglevel",
            loglevel,
            "--schedule",
            str((settings.data_dir / "celerybeat-schedule").resolve()),
        ]
    )


def audio_files(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise typer.BadParameter(f"{path} does not exist")
    return found


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Audio files or folders")],
    labels: Annotated[str | None, typer.Option(help="labels for every file, comma-separated")] = None,
    window: Annotated[int, typer.Option(min=1, help="files in flight at once")] = 16,
) -> None:
    """Add audio files (or every audio file under folders) to the library: once per file, resumable.

    Stop it at any time (Ctrl-C) and run the same command again: files already in the library are skipped
    (same bytes), files in flight are picked up where they are, nothing is added twice.
    """
    from echovids.errors import InvalidRequest
    from echovids.ingest import ingest_files
    from echovids.labels import check_metadata

    files = audio_files(paths)
    label_list = [x.strip() for x in (labels or "").split(",") if x.strip()]
    try:
        check_metadata(None, label_list)  # the limits the HTTP API holds a library write to (titles: file names)
    except InvalidRequest as exc:
        raise typer.BadParameter(exc.message, param_hint="--labels") from None
    try:
        report = ingest_files(files, labels=label_list, window=window)
    except KeyboardInterrupt:
        typer.echo("interrupted: files already sent keep processing; run the same command again to resume", err=True)
        raise typer.Exit(130) from None
    typer.echo(report.summary())
    for path, reason in report.failures:
        typer.echo(f"failed: {path}: {reason}", err=True)
    if report.failures:
        raise typer.Exit(1)


@app.command("import-audioset")
def import_audioset(
    segments: Annotated[list[Path], typer.Option(exists=True, dir_okay=False, help="AudioSet segment CSV(s)")],
    features: Annotated[list[Path], typer.Option(exists=True, help="Folder(s) or file(s) of *.tfrecord features")],
    space_version: Annotated[str, typer.Option(help="version of the vggish embedding space")] = "audioset-pca-uint8",
    wait: Annotated[bool, typer.Option(help="wait until the shards have indexed every clip")] = True,
    progress_every: Annotated[
        float, typer.Option(min=0, help="seconds between progress lines (on stderr); 0: at every step")
    ] = 10.0,
) -> None:
    """Add AudioSet segments as YouTube clips from the released VGGish features (no audio download)."""
    from echovids.audioset import import_audioset as run
    from echovids.errors import EchovidsError

    def say(line: str) -> None:
        typer.echo(line, err=True)

    try:
        report = run(
            segments, features, space_version=space_version, wait=wait, progress=say, progress_every_s=progress_every
        )
    except EchovidsError as error:
        typer.echo(f"error: {error.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(report.summary())
    for line in report.malformed_lines[:20] + report.malformed_records[:20]:
        typer.echo(f"malformed: {line}", err=True)
    for clip_id in report.failed[:20]:
        typer.echo(f"failed: {clip_id}", err=True)
    if report.failed:
        raise typer.Exit(1)


@app.command()
def search(
    file: Annotated[Path | None, typer.Argument(exists=True, dir_okay=False, help="a recording to search with")] = None,
    text: Annotated[str | None, typer.Option(help='a description instead of a file: "rain on a tin roof"')] = None,
    k: Annotated[
        int | None, typer.Option(min=1, help="results (default ECHOVIDS_DEFAULT_K, at most ECHOVIDS_MAX_K)")
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option(help="only results whose matched moment holds this AudioSet class (repeat)")
    ] = None,
    source: Annotated[str | None, typer.Option(help="only clips from youtube or file")] = None,
    min_duration: Annotated[float | None, typer.Option(help="only clips at least this many seconds long")] = None,
    max_duration: Annotated[float | None, typer.Option(help="only clips at most this many seconds long")] = None,
    url: Annotated[str | None, typer.Option(help="gateway URL")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait")] = 60.0,
) -> None:
    """Search the library with a recording or a description, through the HTTP API, and print a table."""
    import httpx
    from rich.console import Console
    from rich.table import Table

    from echovids.harness import LONG_POLL_S, submit_search, submit_text_search
    from echovids.retry import with_backoff

    class Unavailable(Exception):
        """The gateway's 503 (its Redis restarting) or 429 (this client's rate): waited out like a refused
        connection."""

    def available(response: httpx.Response) -> httpx.Response:
        if response.status_code in (429, 503):
            raise Unavailable(response.text[:200])
        return response

    transient = (httpx.TransportError, Unavailable)
    settings = get_settings()
    if k is not None and k > settings.max_k:
        raise typer.BadParameter(f"--k {k} is above ECHOVIDS_MAX_K ({settings.max_k})")
    if (file is None) == (text is None):
        raise typer.BadParameter("give a FILE or --text, one of the two")
    filters = {"labels": label or [], "source": source, "min_duration_s": min_duration, "max_duration_s": max_duration}
    base = url or f"http://{settings.host}:{settings.port}"
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base, timeout=30) as client:
        # Without --k the gateway's ECHOVIDS_DEFAULT_K applies; httpx names the type from the file name.
        def submit() -> httpx.Response:
            if file is not None:
                return submit_search(client, file.read_bytes(), file.name, k, media_type=None, filters=filters)
            assert text is not None
            return submit_text_search(client, text, k, filters)

        answer = with_backoff(lambda: available(submit()), "search", transient, give_up_s=timeout)
        if answer.status_code != 202:
            typer.echo(f"error {answer.status_code}: {answer.json().get('message')}", err=True)
            raise typer.Exit(1)
        location = answer.headers["Location"]
        # A long poll (the gateway answers as soon as the job settles), resumed on the same job after an outage.
        while True:
            wait = max(0.0, min(LONG_POLL_S, deadline - time.monotonic()))
            job = with_backoff(
                lambda: available(client.get(location, params={"wait": wait}, timeout=wait + 30)).json(),  # noqa: B023
                "search",
                transient,
                give_up_s=max(1.0, deadline - time.monotonic()),
            )
            if job["status"] in ("done", "failed") or time.monotonic() >= deadline:
                break
    if job["status"] != "done":
        message = (job.get("error") or {}).get("message", f"still {job['status']} after {timeout:g} s")
        typer.echo(f"search failed: {message}", err=True)
        raise typer.Exit(1)
    if job.get("text_classes"):
        read_as = ", ".join(f"{c['name']} {c['weight']:.2f}" for c in job["text_classes"][:5])
        typer.echo(f"read as: {read_as}")
    table = Table(title=f"{len(job['results'])} results for {file.name if file else repr(text)}")
    for column in ("#", "title", "at", "match", "score", "labels", "source"):
        table.add_column(column)
    for i, r in enumerate(job["results"], 1):
        minutes, seconds = divmod(r["match_start_s"], 60)
        source_text = r["source"].get("url") or r["source"].get("file_name") or ""
        table.add_row(
            str(i),
            r["title"],
            f"{int(minutes)}:{seconds:05.2f}",
            r["match"],
            f"{r['score']:.3f}",
            ", ".join(r["labels"][:3]),
            source_text,
        )
    Console().print(table)


@app.command("reindex-classes")
def reindex_classes(
    wait: Annotated[float, typer.Option(help="seconds to wait for the re-index to finish (0: just queue it)")] = 600.0,
) -> None:
    """Give a library indexed before search by description its sound class scores, from each clip's stored audio.

    Runs on the services (`echovids serve` or the containers): each ready clip's shard checks whether it has its
    scores, and only those without are embedded again. Safe to run again.
    """
    from echovids import catalog
    from echovids.jobs import SETTLED, JobStore
    from echovids.pipeline import submit_class_reindex
    from echovids.schemas import ClipStatus

    clips = catalog.clips_with_status(ClipStatus.ready)
    store = JobStore()
    jobs = [submit_class_reindex(clip_id, shard, store).id for clip_id, shard in clips]
    typer.echo(f"queued {len(jobs)} clips")
    deadline = time.monotonic() + wait
    outcome: dict[str, int] = {}
    while wait > 0:
        records = [store.get(job_id) for job_id in jobs]
        if all(r.status in SETTLED for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if wait <= 0:
        return
    for r in records:
        key = r.error.code if r.error else (r.progress or r.status.value)
        outcome[key] = outcome.get(key, 0) + 1
    typer.echo(", ".join(f"{n} {what}" for what, n in sorted(outcome.items())) or "nothing to do")
    if any(r.status not in SETTLED for r in records) or any(r.error for r in records):
        raise typer.Exit(1)


@app.command("eval")
def evaluate(
    url: Annotated[str | None, typer.Option(help="gateway of the Echovids to measure (exact, similar)")] = None,
    out: Annotated[Path, typer.Option(help="folder for report.json, report.md, ground truth and library files")] = Path(
        "eval-report"
    ),
    suite: Annotated[
        list[str] | None,
        typer.Option(
            help="exact | similar | clips | text | folds | synthetic, repeated (default exact and similar). clips "
            "and text need an Echovids of their own for the 400 single clips: --clips-url; synthetic builds its "
            "library at --url"
        ),
    ] = None,
    clips_url: Annotated[
        str | None,
        typer.Option(
            help="gateway of the Echovids that holds the 400 single clips (clips suite; default --url). Its "
            "same-sounds pass deletes the 88 clips no recording is made of and adds them back after it"
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the queries (offsets, noise)")] = 0,
    queries_per_condition: Annotated[int, typer.Option(min=1, help="exact: queries per length and degradation")] = 100,
    length: Annotated[list[float] | None, typer.Option(help="exact: excerpt length(s) in s (default 2 3 5)")] = None,
    condition: Annotated[
        list[str] | None, typer.Option(help="exact: degradation(s) by name (default all; see the report for names)")
    ] = None,
    library_seed: Annotated[int, typer.Option(help="seed of the shuffle that joins clips into recordings")] = 0,
    esc10: Annotated[Path | None, typer.Option(help="the ESC-10 folder (labels.csv, audio/)")] = None,
    allow_foreign: Annotated[
        bool, typer.Option(help="measure even if the library holds clips the suite did not add")
    ] = False,
    api_key: Annotated[str | None, typer.Option(envvar="ECHOVIDS_API_KEY", help="key for library writes")] = None,
    offline: Annotated[
        bool,
        typer.Option(
            help="no running Echovids: the service's code in this process, a library of its own under --out "
            "(to try a change in a minute; publish figures measured through the system)"
        ),
    ] = False,
    synthetic_seed: Annotated[
        int | None, typer.Option(help="synthetic: seed of the sounds and queries (default --seed)")
    ] = None,
    fresh_synthetic_seed: Annotated[
        bool, typer.Option(help="synthetic: a new seed this run (printed and in the report, to repeat the run)")
    ] = False,
    synthetic_per_kind: Annotated[int, typer.Option(min=1, help="synthetic: sounds per kind")] = 4,
    synthetic_queries: Annotated[int, typer.Option(min=1, help="synthetic: excerpts per long sound")] = 3,
    synthetic_distractors: Annotated[
        bool, typer.Option(help="synthetic: the 400 ESC-10 clips in its library as distractors")
    ] = True,
) -> None:
    """Measure search quality through the HTTP API on ESC-10 (issue 7): writes report.json and report.md."""
    from echovids.synthetic import fresh_seed

    ev = _layer_above("evaluation.suites")
    settings = get_settings()
    suites = tuple(suite or ("exact", "similar"))
    unknown = [s for s in suites if s not in ev.SUITES]
    names = [c.name for c in ev.CONDITIONS]
    unknown += [c for c in condition or [] if c not in names]
    if unknown:
        raise typer.BadParameter(f"unknown {unknown}; suites: {', '.join(ev.SUITES)}; conditions: {', '.join(names)}")
    cfg = ev.EvalConfig(
        url=url or f"http://{settings.host}:{settings.port}",
        out=out,
        suites=suites,
        clips_url=clips_url,
        seed=seed,
        queries_per_condition=queries_per_condition,
        lengths_s=tuple(length or ev.LENGTHS_S),
        conditions=tuple(condition or names),
        library_seed=library_seed,
        allow_foreign=allow_foreign,
        offline=offline,
        api_key=api_key,
        synthetic_seed=fresh_seed() if fresh_synthetic_seed else synthetic_seed,
        synthetic_per_kind=synthetic_per_kind,
        synthetic_queries=synthetic_queries,
        synthetic_distractors=synthetic_distractors,
        log=lambda line: typer.echo(line, err=True),
    )
    if "synthetic" in suites:
        typer.echo(f"synthetic seed: {seed if cfg.synthetic_seed is None else cfg.synthetic_seed}", err=True)
    if esc10 is not None:
        cfg.esc10 = esc10
    try:
        ev.run(cfg)
    except ev.LibraryMismatch as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo((out / "report.md").read_text())


@app.command(
    "bench",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """Benchmarks (figures in docs/benchmarks.md); `echovids bench --help` lists them."""
    # benchmarks/ (and its extra dependencies) load only for `echovids bench`, never for a worker.
    _layer_above("benchmarks.cli").bench_app(ctx.args, prog_name="echovids bench")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
