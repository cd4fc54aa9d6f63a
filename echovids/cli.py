"""The `echovids` command line: serve, worker, ingest, search."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from echovids.settings import get_settings

app = typer.Typer(
    help="Echovids: audio-by-example search.", no_args_is_help=True, add_completion=False,
    pretty_exceptions_enable=False,
)

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".mp4", ".aac", ".webm", ".opus", ".aif",
                  ".aiff"}


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
    concurrency: Annotated[int, typer.Option(help="worker processes")] = 1,
    loglevel: Annotated[str, typer.Option()] = "INFO",
) -> None:
    """Run one service's Celery worker on its own queue(s)."""
    from echovids import queues
    from echovids.celery_app import get_celery

    settings = get_settings()
    celery = get_celery()
    if service == "embedder":
        import services.embedder.tasks

        names = [queues.EMBED]
    elif service == "search":
        import services.search.tasks

        shards = shard if shard else list(range(settings.search_shards))
        names = [queues.shard_queue(i) for i in shards] + ([queues.SEARCH_MERGE] if merge else [])
    elif service == "availability":
        import services.availability.tasks  # noqa: F401

        names = [queues.AVAILABILITY]
    else:
        raise typer.BadParameter(f"unknown service {service!r}; one of {', '.join(queues.SERVICES)}")
    celery.worker_main([
        "worker", "-Q", ",".join(names), "-n", f"{service}-%i@%h", "--pool", "prefork",
        "--concurrency", str(concurrency), "--loglevel", loglevel, "--without-mingle", "--without-gossip",
    ])


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
    window: Annotated[int, typer.Option(help="files in flight at once")] = 16,
) -> None:
    """Add audio files (or every audio file under folders) to the library."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from echovids.jobs import JobStore
    from echovids.pipeline import submit_file
    from echovids.schemas import JobStatus

    files = audio_files(paths)
    store = JobStore()
    failures: list[tuple[Path, str]] = []
    pending: dict[str, Path] = {}
    queue = list(files)
    columns = (TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not sys.stderr.isatty()) as progress:
        bar = progress.add_task("files", total=len(files))
        while queue or pending:
            while queue and len(pending) < window:
                path = queue.pop(0)
                pending[submit_file(path, store).id] = path
            time.sleep(0.1)
            for job_id, path in list(pending.items()):
                job = store.get(job_id)
                if job.status == JobStatus.done:
                    del pending[job_id]
                    progress.advance(bar)
                elif job.status == JobStatus.failed:
                    del pending[job_id]
                    progress.advance(bar)
                    failures.append((path, job.error.message if job.error else "failed"))
    typer.echo(f"ingested {len(files) - len(failures)} of {len(files)} files")
    for path, reason in failures:
        typer.echo(f"failed: {path}: {reason}", err=True)
    if failures:
        raise typer.Exit(1)


@app.command()
def search(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    k: Annotated[int, typer.Option(min=1, max=100)] = 10,
    url: Annotated[str | None, typer.Option(help="gateway URL")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait")] = 60.0,
) -> None:
    """Search the library with a recording, through the HTTP API, and print a table."""
    import httpx
    from rich.console import Console
    from rich.table import Table

    settings = get_settings()
    base = url or f"http://{settings.host}:{settings.port}"
    with httpx.Client(base_url=base, timeout=30) as client:
        with file.open("rb") as f:
            answer = client.post("/v1/searches", files={"file": (file.name, f)}, data={"k": str(k)})
        if answer.status_code != 202:
            typer.echo(f"error {answer.status_code}: {answer.json().get('message')}", err=True)
            raise typer.Exit(1)
        location = answer.headers["Location"]
        deadline = time.monotonic() + timeout
        while True:
            job = client.get(location).json()
            if job["status"] in ("done", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    if job["status"] != "done":
        message = (job.get("error") or {}).get("message", f"still {job['status']} after {timeout:g} s")
        typer.echo(f"search failed: {message}", err=True)
        raise typer.Exit(1)
    table = Table(title=f"{len(job['results'])} results for {file.name}")
    for column in ("#", "title", "at", "match", "score", "labels", "source"):
        table.add_column(column)
    for i, r in enumerate(job["results"], 1):
        minutes, seconds = divmod(r["match_start_s"], 60)
        source = r["source"].get("url") or r["source"].get("file_name") or ""
        table.add_row(str(i), r["title"], f"{int(minutes)}:{seconds:05.2f}", r["match"], f"{r['score']:.3f}",
                      ", ".join(r["labels"][:3]), source)
    Console().print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
