"""Bulk ingest of a folder of audio files: once per file, in parallel through the embedder queue, resumable.

How it resumes without duplicates or losses (the catalog is the record, Redis only carries work):
- A file's identity is the sha256 of its bytes (``clips.file_sha256``), checked before anything is decoded:
  a file already ready (or a duplicate) is skipped.
- ``pipeline.submit_clip`` writes the row (pending), sends the tasks, and only then records ``job_id``.
  On a second run a pending row whose job is still running is waited for (the workers kept going while the
  command was stopped); a pending row without a job, or whose job vanished or failed, is submitted again under
  its own clip id, so even a chain that did run after all indexes nothing twice (segments are per clip id).
- Different bytes with the same decoded audio are caught at index time (``catalog.claim_content``): the later
  clip is marked ``duplicate`` and not indexed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from echovids import catalog
from echovids.errors import NotFound
from echovids.jobs import JobStore
from echovids.library import submit_once
from echovids.retry import with_backoff
from echovids.schemas import ClipStatus, JobStatus


@dataclass
class IngestReport:
    files: int = 0
    added: int = 0
    skipped: int = 0  # same bytes already in the library (or twice in this run)
    duplicates: int = 0  # other bytes, same decoded audio as a clip in the library
    audio_s: float = 0.0  # audio processed in this run
    wall_s: float = 0.0
    failures: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return self.files - len(self.failures)

    def summary(self) -> str:
        return (
            f"ingested {self.ok} of {self.files} files ({self.added} new, {self.skipped} already in the library, "
            f"{self.duplicates} duplicates of other files); {self.audio_s / 3600:.3f} h of audio in "
            f"{self.wall_s:.1f} s"
        )


def _progress(total_bytes: int, files: int, enabled: bool):  # type: ignore[no-untyped-def]
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        TextColumn("ingest"),
        BarColumn(),
        TextColumn("{task.fields[done]}/{task.fields[files]} files"),
        TextColumn("{task.fields[hours]:.2f} h audio"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
    )
    progress = Progress(*columns, disable=not enabled)
    # The bar runs on bytes: a fair stand-in for audio length before the audio is decoded, so the ETA holds
    # for folders of files of very different lengths.
    task = progress.add_task("ingest", total=max(1, total_bytes), done=0, files=files, hours=0.0)
    return progress, task


def ingest_files(
    files: list[Path],
    labels: list[str] | None = None,
    window: int = 16,
    show_progress: bool | None = None,
    store: JobStore | None = None,
    on_submit: Callable[[Path], None] | None = None,
    poll_s: float = 0.1,
) -> IngestReport:
    """Add ``files`` to the library; returns what happened. KeyboardInterrupt passes through (resumable)."""
    store = store or JobStore()
    report = IngestReport(files=len(files))
    sizes = {}
    for path in files:
        try:
            sizes[path] = path.stat().st_size
        except OSError:
            sizes[path] = 0
    queue = list(files)
    pending: dict[str, tuple[Path, str]] = {}  # job id -> (path, clip id)
    started = time.monotonic()
    enabled = sys.stderr.isatty() if show_progress is None else show_progress
    progress, bar = _progress(sum(sizes.values()), len(files), enabled)
    done = 0

    def finish(path: Path) -> None:
        nonlocal done
        done += 1
        progress.update(bar, advance=sizes[path], done=done, hours=report.audio_s / 3600)

    with progress:
        while queue or pending:
            while queue and len(pending) < window:
                path = queue.pop(0)
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    report.failures.append((path, f"cannot read: {exc.strerror or exc}"))
                    finish(path)
                    continue
                # While Redis is down (restarting) the submission waits and is tried again: submit_once resumes
                # a half-sent clip under its own id, so a retry adds nothing twice.
                submitted = with_backoff(
                    partial(submit_once, data, title=path.stem, file_name=path.name, labels=labels, store=store),
                    f"ingest {path.name}",
                )
                if on_submit:
                    on_submit(path)
                if submitted.skipped or submitted.job.id in pending:
                    report.skipped += 1
                    finish(path)
                    continue
                pending[submitted.job.id] = (path, submitted.job.clip_id or "")
            if not pending:
                continue
            time.sleep(poll_s)
            clips = catalog.get_clips([clip_id for _, clip_id in pending.values()])
            for job_id, (path, clip_id) in list(pending.items()):
                clip, job = clips.get(clip_id), None
                # The catalog has the last word: a clip whose job was lost is sent again by the library upkeep
                # under a new job and settles there, while the lost one never does. Until it speaks, the job does.
                if clip is None or clip.status == ClipStatus.pending:
                    try:
                        job = with_backoff(partial(store.get, job_id), "ingest")
                    except NotFound:
                        job = None
                    if job is not None and not job.status.settled:
                        continue
                    clip = catalog.get_clips([clip_id]).get(clip_id)  # as the job left it
                del pending[job_id]
                if clip is not None and clip.status == ClipStatus.failed:
                    report.failures.append((path, clip.error_message or "failed"))
                elif clip is not None and clip.status != ClipStatus.pending:
                    report.audio_s += clip.duration_s or 0.0
                    if clip.status == ClipStatus.duplicate:
                        report.duplicates += 1
                    else:
                        report.added += 1
                elif job is None:
                    # The job record vanished under us (Redis flushed or expired): the next run resubmits it.
                    report.failures.append((path, "its job vanished; run the ingest again to resume it"))
                elif job.status == JobStatus.done:
                    report.added += 1
                else:
                    report.failures.append((path, job.error.message if job.error else "failed"))
                    if clip is not None:
                        catalog.set_status(clip_id, ClipStatus.failed)  # the embedder failed it (it keeps no catalog)
                finish(path)
    report.wall_s = time.monotonic() - started
    return report
