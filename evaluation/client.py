"""The running Echovids, through its public HTTP API: what the library holds, adding to it, timed searches."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from echovids.harness import submit_search, submit_text_search, wait_for_job
from echovids.schemas import ClipStatus

BATCH = 16  # files per POST /v1/library


@dataclass
class SearchAnswer:
    status: str  # done | failed | timeout | rejected
    results: list[dict]
    latency_s: float  # submit to done, as the client sees it
    error: str | None = None
    text_classes: list[dict] = field(default_factory=list)  # a search by description: how the text was read


class Client(Protocol):
    """What the suites ask of an Echovids: this HTTP client's calls, or offline.OfflineClient's."""

    url: str

    def close(self) -> None: ...
    def config(self) -> dict: ...
    def library_items(self) -> dict[str, dict] | None: ...
    def add(self, files: list[tuple[Path, str, list[str]]], log=print) -> list[str]: ...
    def delete(self, clip_id: str) -> None: ...
    def search(self, data: bytes, file_name: str, k: int) -> SearchAnswer: ...
    def text_search(self, text: str, k: int) -> SearchAnswer: ...


class EchovidsClient:
    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 60.0, poll_s: float = 0.02) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=60, headers=headers)
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._spec: dict | None = None

    def close(self) -> None:
        self.http.close()

    # -- what the service offers -----------------------------------------------------------------------------
    def spec(self) -> dict:
        """The service's OpenAPI document (fetched once)."""
        if self._spec is None:
            self._spec = self.http.get("/openapi.json").raise_for_status().json()
        return self._spec

    def paths(self) -> dict[str, list[str]]:
        return {p: [m.lower() for m in v] for p, v in self.spec().get("paths", {}).items()}

    def long_poll(self) -> bool:
        """Whether GET /v1/searches/{id} takes `wait` (an older service is polled every poll_s instead)."""
        get = self.spec().get("paths", {}).get("/v1/searches/{job_id}", {}).get("get", {})
        return any(p.get("name") == "wait" for p in get.get("parameters", []))

    def has(self, path: str, method: str) -> bool:
        return method.lower() in self.paths().get(path, [])

    def ready(self) -> bool:
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def config(self) -> dict:
        if self.has("/v1/config", "get"):
            return self.http.get("/v1/config").json()
        return {}

    # -- the library -----------------------------------------------------------------------------------------
    def library_items(self) -> dict[str, dict] | None:
        """title -> library item (id, status, ...) of every clip; None when the service cannot list its library."""
        if not self.has("/v1/library", "get"):
            return None
        items: dict[str, dict] = {}
        page = 1
        while True:
            answer = self.http.get("/v1/library", params={"page": page, "page_size": 200}).raise_for_status().json()
            for item in answer["items"]:
                items[item["title"]] = item
            if page * answer["page_size"] >= answer["total"] or not answer["items"]:
                return items
            page += 1

    def delete(self, clip_id: str) -> None:
        """DELETE /v1/library/{clip_id}: the clip stops matching at once."""
        self.http.delete(f"/v1/library/{clip_id}").raise_for_status()

    def add(self, files: list[tuple[Path, str, list[str]]], log=print, timeout_s: float = 1800.0) -> list[str]:
        """Add (path, title, labels) files and wait until each is ready; returns failures as text.

        POST /v1/library where the service has it; otherwise `echovids ingest` in a subprocess with this process's
        environment (which must then point at the same Redis / data dir as the service).
        """
        if not files:
            return []
        if not self.has("/v1/library", "post"):
            return self._add_by_cli(files, log)
        clip_ids: dict[str, str] = {}
        failures: list[str] = []
        for i in range(0, len(files), BATCH):
            batch = files[i : i + BATCH]
            # The title of a clip sent with others is its file name's stem.
            multipart = [
                ("file", (f"{title}{path.suffix}", path.read_bytes(), "application/octet-stream"))
                for path, title, _ in batch
            ]
            # A request's labels apply to all its files: one request per set of labels.
            by_labels: dict[tuple[str, ...], list[int]] = {}
            for j, (_, _, clip_labels) in enumerate(batch):
                by_labels.setdefault(tuple(clip_labels), []).append(j)
            for labels, members in by_labels.items():
                answer = self.http.post(
                    "/v1/library",
                    files=[multipart[j] for j in members],
                    data={"labels": ",".join(labels)} if labels else None,
                )
                if answer.status_code != 202:
                    failures += [f"{batch[j][0].name}: {answer.status_code} {answer.text[:200]}" for j in members]
                    continue
                for j, job in zip(members, answer.json(), strict=True):
                    clip_ids[batch[j][0].name] = job["clip_id"]
            log(f"  sent {min(i + BATCH, len(files))} of {len(files)} files")
        deadline = time.monotonic() + timeout_s
        pending = dict(clip_ids)
        while pending and time.monotonic() < deadline:
            for name, clip_id in list(pending.items()):
                item = self.http.get(f"/v1/library/{clip_id}").json()
                if item.get("status") in (ClipStatus.ready, ClipStatus.duplicate):
                    del pending[name]
                elif item.get("status") == ClipStatus.failed:
                    del pending[name]
                    failures.append(f"{name}: {(item.get('error') or {}).get('message', 'failed')}")
            if pending:
                time.sleep(1.0)
        failures += [f"{name}: not ready after {timeout_s:g} s" for name in pending]
        return failures

    def _add_by_cli(self, files: list[tuple[Path, str, list[str]]], log=print) -> list[str]:
        log("  POST /v1/library is not offered by this service: adding through `echovids ingest`")
        with tempfile.TemporaryDirectory() as tmp:
            for path, title, _ in files:
                (Path(tmp) / f"{title}{path.suffix}").symlink_to(path.resolve())
            done = subprocess.run(
                [sys.executable, "-m", "echovids.cli", "ingest", tmp],
                env=dict(os.environ),
                capture_output=True,
                text=True,
                check=False,
            )
        log("  " + done.stdout.strip())
        return [] if done.returncode == 0 else done.stderr.strip().splitlines()

    # -- searches --------------------------------------------------------------------------------------------
    def search(self, data: bytes, file_name: str, k: int) -> SearchAnswer:
        """POST /v1/searches and poll until done; latency from just before the upload to the poll that saw done."""
        started = time.perf_counter()
        return self._answer(submit_search(self.http, data, file_name, k), started)

    def text_search(self, text: str, k: int) -> SearchAnswer:
        """POST /v1/searches with a description and poll until done, timed like ``search``."""
        started = time.perf_counter()
        return self._answer(submit_text_search(self.http, text, k), started)

    def _answer(self, answer: httpx.Response, started: float) -> SearchAnswer:
        if answer.status_code != 202:
            return SearchAnswer(
                "rejected", [], time.perf_counter() - started, f"{answer.status_code}: {answer.text[:200]}"
            )
        # A long poll (answered when the job settles) where the service offers one, else plain reads.
        left = self.timeout_s - (time.perf_counter() - started)
        job = wait_for_job(self.http, answer.headers["Location"], left, long_poll=self.long_poll(), poll_s=self.poll_s)
        latency = time.perf_counter() - started
        if job["status"] in ("done", "failed"):
            error = (job.get("error") or {}).get("message") if job["status"] == "failed" else None
            return SearchAnswer(job["status"], job.get("results") or [], latency, error, job.get("text_classes") or [])
        return SearchAnswer("timeout", [], latency, f"still {job['status']}")
