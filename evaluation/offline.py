"""`echovids eval --offline`: the suites without a running Echovids, to try a change in a minute.

The service's own code runs in this process, behind the client interface the suites already use: the
embedder's arrays (``services.embedder.tasks``), one :class:`ShardIndex` per library under ``folder``, and every
query through ``search_shard`` and the merge's ranking (``rank_answers``, several exact matches set against the
added files' audio), compacted as a search process compacts. Left out: Celery, Redis, the catalog and
availability. It gives the system's answers, not its latencies: publish figures measured through the system, use
this to try a change.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from echovids.audio import decode_bytes
from echovids.schemas import ClipStatus
from echovids.settings import get_settings
from evaluation.client import SearchAnswer


class OfflineClient:
    """An Echovids of one shard in this process, with the calls of :class:`EchovidsClient` the suites make."""

    def __init__(self, folder: Path) -> None:
        from services.embedder.factory import get_model
        from services.search.shard import ShardIndex

        shutil.rmtree(folder, ignore_errors=True)  # a library of its own each run: nothing foreign in it
        self.url = f"offline:{folder}"
        self.model = get_model()
        self.index = ShardIndex(folder, 0)
        # title -> the file it was added from (its "stored audio"); a clip's id is its title (unique in a suite)
        self.paths: dict[str, Path] = {}

    def close(self) -> None:
        pass

    def config(self) -> dict:
        return {"offline": True, "space": self.model.space.key}

    def library_items(self) -> dict[str, dict]:
        return {title: {"clip_id": title, "status": ClipStatus.ready} for title in self.paths}

    def add(self, files: list[tuple[Path, str, list[str]]], log=print) -> list[str]:
        """Embed and index (path, title, labels) files; returns failures as text."""
        from echovids.errors import EchovidsError
        from services.embedder.tasks import clip_arrays

        failures = []
        for i, (path, title, _) in enumerate(files):
            try:
                arrays, _embedded = clip_arrays(self.model, decode_bytes(path.read_bytes()))
            except EchovidsError as error:
                failures.append(f"{path.name}: {error.message}")
                continue
            self.index.write_segment(title, arrays, self.model.space.key)
            self.index.add_segment(title)
            self.paths[title] = path
            if (i + 1) % 100 == 0:
                log(f"  indexed {i + 1} of {len(files)} files")
        # As a search process does (services/search/tasks.py, maybe_compact): a delta past the setting becomes a
        # snapshot, whose frames are int8 codes; ECHOVIDS_SEARCH_DELTA_MAX=0 seals every clip.
        if self.index.delta_rows > get_settings().search_delta_max:
            self.index.compact()
        return failures

    def delete(self, clip_id: str) -> None:
        self.index.write_tombstone(clip_id)
        self.index.refresh()
        del self.paths[clip_id]

    def search(self, data: bytes, file_name: str, k: int) -> SearchAnswer:
        from echovids.errors import EchovidsError
        from services.embedder.tasks import query_arrays
        from services.search.query import rank_answers, search_shard, sent_to_merge
        from services.search.verify import file_window

        started = time.perf_counter()
        try:
            waveform = decode_bytes(data)
            arrays = query_arrays(self.model, waveform)
            found = search_shard(self.index, self.model.space.key, arrays, limit=max(k * 2, 100), k=k)
            ranked = rank_answers(
                sent_to_merge(found, k), k, lambda: waveform, lambda clip, t, s: file_window(self.paths[clip], t, s)
            )
        except EchovidsError as error:
            return SearchAnswer("failed", [], time.perf_counter() - started, error.message)
        results = [
            {
                "title": c.clip_id,
                "match_start_s": round(max(0.0, c.match_start_s), 3),
                "query_start_s": round(c.query_start_s, 3),
                "score": round(c.score, 4),
                "match": c.match.value,
                "period_s": c.period_s,
            }
            for c in ranked
            if c.clip_id in self.paths
        ]
        return SearchAnswer("done", results[:k], time.perf_counter() - started)

    def text_search(self, text: str, k: int) -> SearchAnswer:
        from echovids.errors import EchovidsError
        from services.embedder.tasks import text_arrays, text_mapper
        from services.search.query import rank_answers, search_text_shard

        started = time.perf_counter()
        try:
            arrays, classes = text_arrays(text_mapper(), text)
            ranked = rank_answers(search_text_shard(self.index, arrays, limit=k * 3), k, lambda: None)
        except EchovidsError as error:
            return SearchAnswer("failed", [], time.perf_counter() - started, error.message)
        results = [
            {
                "title": c.clip_id,
                "match_start_s": round(c.match_start_s, 3),
                "score": round(c.score, 4),
                "match": "similar",
            }
            for c in ranked
            if c.clip_id in self.paths
        ]
        return SearchAnswer("done", results[:k], time.perf_counter() - started, None, [c.model_dump() for c in classes])
