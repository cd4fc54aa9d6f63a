"""The three suites of `echovids eval` and the report they write.

- exact: excerpts (2, 3, 5 s) of library recordings at random offsets, under degradations; is the top result the
  recording, at the right moment?
- similar: the whole clips of fold 1 (not in the library) against recordings of folds 2-5; does a result's
  ``match_start_s`` fall inside a segment of the query's class?
- clips: each ESC-10 clip against the other 399 as separate clips; precision@k and mAP.

(Further suites live in modules of their own: text in evaluation/text_suite.py, folds in evaluation/folds.py,
synthetic, per kind of synthetic sound, in evaluation/synthetic_suite.py.)

exact and similar share one library: the recordings joined from folds 2-5 (every exact-suite excerpt comes from a
recording in it; no fold-1 audio is in it). clips needs a library of the 400 single clips and nothing else, so it
runs against a second Echovids (``--clips-url``). Each suite adds to the library what it needs and is missing, and
refuses a library that holds other clips (they would take places in the results) unless told to allow them.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypedDict

import numpy as np

from echovids.audio_params import SAMPLE_RATE
from echovids.harness import machine_info, wav_bytes, write_wav
from echovids.schemas import ClipStatus
from evaluation import degrade, metrics, text_suite
from evaluation.client import Client, EchovidsClient
from evaluation.dataset import (
    DEFAULT_ESC10,
    Clip,
    Recording,
    join_recordings,
    load_clips,
    load_waveform,
)
from evaluation.references import REFERENCES, Side

SUITES = ("exact", "similar", "clips", "folds", "text", "synthetic")
LENGTHS_S = (2.0, 3.0, 5.0)
OFFSET_TOLERANCE_S = 0.5
SILENT_PEAK = 10 ** (-50 / 20)  # an excerpt with no sample above -50 dBFS is silence, not a query


@dataclass
class Condition:
    name: str
    kind: str  # clean | recording-noise | white-noise | band-limit | reverb | opus
    snr_db: float | None = None

    def snr(self) -> float:
        """The signal-to-noise ratio of a noise condition."""
        if self.snr_db is None:
            raise ValueError(f"condition {self.name} ({self.kind}) mixes in noise but has no snr_db")
        return self.snr_db


CONDITIONS = [
    Condition("clean", "clean"),
    Condition("rec-20dB", "recording-noise", 20.0),
    Condition("rec-10dB", "recording-noise", 10.0),
    Condition("rec-0dB", "recording-noise", 0.0),
    Condition("white-20dB", "white-noise", 20.0),
    Condition("white-10dB", "white-noise", 10.0),
    Condition("white-0dB", "white-noise", 0.0),
    Condition("band-300-3400Hz", "band-limit"),
    Condition("reverb-0.4s", "reverb"),
    Condition("opus-32k", "opus"),
]


@dataclass
class EvalConfig:
    url: str
    out: Path
    suites: tuple[str, ...] = ("exact", "similar")
    clips_url: str | None = None
    seed: int = 0
    queries_per_condition: int = 100
    lengths_s: tuple[float, ...] = LENGTHS_S
    conditions: tuple[str, ...] = tuple(c.name for c in CONDITIONS)
    library_seed: int = 0
    clips_per_recording: int = 12
    clip_s: float = 5.0
    esc10: Path = DEFAULT_ESC10
    k: int = 10
    clips_k: int = 100
    api_key: str | None = None
    allow_foreign: bool = False
    offline: bool = False  # the service's code in this process instead of a running Echovids (offline.py)
    timeout_s: float = 60.0
    synthetic_seed: int | None = None  # the synthetic suite's sounds and queries (None: seed)
    synthetic_per_kind: int = 4  # long sounds per kind (and as many short ones bare, as many in context)
    synthetic_queries: int = 3  # excerpts per long sound
    synthetic_distractors: bool = True  # the 400 ESC-10 clips in the synthetic library too
    log: Callable[[str], None] = print
    started: datetime = field(default_factory=lambda: datetime.now(UTC))


class LibraryMismatch(RuntimeError):
    pass


# -- the libraries ----------------------------------------------------------------------------------------------
def recordings_library(cfg: EvalConfig, clips: list[Clip], with_audio: bool) -> tuple[list[Recording], list[Clip]]:
    """Recordings joined from the clips of folds 2-5 (the similar suite's fold 1 stays out)."""
    pool = [c for c in clips if c.fold != 1]
    waveforms = None
    if with_audio:
        cfg.log(f"decoding {len(pool)} ESC-10 clips of folds 2-5")
        waveforms = {c.name: load_waveform(c, cfg.clip_s) for c in pool}
    return join_recordings(
        pool,
        waveforms,
        cfg.clips_per_recording,
        cfg.clip_s,
        seed=cfg.library_seed,
        prefix=f"esc10rec-s{cfg.library_seed}-",
    )


def ensure_library(client: Client, wanted: dict[str, tuple[Path, list[str]]], cfg: EvalConfig) -> dict:
    """Add the clips (title -> (file, labels)) the library lacks; refuse one that holds others."""
    items = client.library_items()
    if items is None:
        cfg.log(
            "  the service cannot list its library (no GET /v1/library): adding every file (bytes already "
            "there are skipped by the service)"
        )
        missing = list(wanted)
        foreign: list[str] = []
    else:
        foreign = sorted(t for t in items if t not in wanted)
        if foreign and not cfg.allow_foreign:
            raise LibraryMismatch(
                f"the library at {client.url} holds {len(foreign)} clip(s) this suite did not put there "
                f"(e.g. {foreign[:3]}); they would take places in the results. Point the suite at an Echovids with "
                "an empty or suite-only library, or pass --allow-foreign."
            )
        missing = [t for t in wanted if items.get(t, {}).get("status") not in (ClipStatus.ready, ClipStatus.duplicate)]
    cfg.log(f"  library: {len(wanted) - len(missing)} of {len(wanted)} clips there, adding {len(missing)}")
    failures = client.add([(wanted[t][0], t, wanted[t][1]) for t in missing], log=cfg.log)
    if failures:
        raise LibraryMismatch(f"{len(failures)} file(s) could not be added: {failures[:5]}")
    return {"clips": len(wanted), "added": len(missing), "foreign_clips": len(foreign)}


# -- exact ------------------------------------------------------------------------------------------------------
def _rng(seed: int, *parts: object) -> np.random.Generator:
    return np.random.default_rng([seed, *(zlib.crc32(str(p).encode()) for p in parts)])


def _excerpt(rng: np.random.Generator, recording: Recording, length_s: float) -> tuple[float, np.ndarray]:
    n = round(length_s * SAMPLE_RATE)
    for _ in range(100):
        start = int(rng.integers(0, recording.waveform.size - n + 1))
        piece = recording.waveform[start : start + n]
        if np.max(np.abs(piece)) >= SILENT_PEAK:
            return start / SAMPLE_RATE, piece
    raise RuntimeError(f"{recording.name} looks silent")


def make_query(
    cond: Condition, rng: np.random.Generator, recordings: list[Recording], index: int, length_s: float
) -> dict:
    """One query of a condition: its audio (bytes to upload) and what is known about it."""
    recording = recordings[index]
    offset, clean = _excerpt(rng, recording, length_s)
    query: dict = {
        "recording": recording.name,
        "offset_s": round(offset, 4),
        "length_s": length_s,
        "rms_dbfs": round(10 * np.log10(degrade.power(clean) + 1e-12), 1),
    }
    if cond.kind == "clean":
        audio = clean
    elif cond.kind == "recording-noise":
        other = int(rng.choice([i for i in range(len(recordings)) if i != index]))
        noise_offset, noise = _excerpt(rng, recordings[other], length_s)
        query.update(noise_recording=recordings[other].name, noise_offset_s=round(noise_offset, 4))
        audio = degrade.mix_at_snr(clean, noise, cond.snr())
    elif cond.kind == "white-noise":
        audio = degrade.mix_at_snr(clean, degrade.white_noise(clean.size, rng), cond.snr())
    elif cond.kind == "band-limit":
        audio = degrade.band_limit(clean)
    elif cond.kind == "reverb":
        audio = degrade.reverb(clean, rng)
    elif cond.kind == "opus":
        data, _ = degrade.opus_roundtrip(clean)
        query.update(data=data, file_name="query.webm")
        return query
    else:
        raise ValueError(cond.kind)
    query.update(data=wav_bytes(audio), file_name="query.wav")
    return query


def judge_exact(query: dict, results: list[dict]) -> dict:
    record = {k: v for k, v in query.items() if k not in ("data", "file_name")}
    titles = [r["title"] for r in results]
    record["rank"] = titles.index(query["recording"]) + 1 if query["recording"] in titles else None
    if not results:
        record.update(top=None, correct=False, on_time=False, error_s=None, top_exact=False)
        return record
    top = results[0]
    correct = top["title"] == query["recording"]
    error = metrics.offset_error(top["match_start_s"], top["query_start_s"], query["offset_s"]) if correct else None
    record.update(
        top=top["title"],
        match_start_s=top["match_start_s"],
        query_start_s=top["query_start_s"],
        top_match=top["match"],
        top_exact=top["match"] == "exact",
        correct=correct,
        error_s=None if error is None else round(error, 4),
        on_time=correct and error is not None and error <= OFFSET_TOLERANCE_S,
    )
    return record


def miss_reason(record: dict) -> str | None:
    if record["on_time"]:
        return None
    if record.get("status") != "done":
        return "search failed"
    if record["top"] is None:
        return "no result"
    if record["correct"]:
        return "right recording, offset off by > 0.5 s"
    if record.get("noise_recording") == record["top"]:
        return "the interfering recording won"
    return "another recording won"


def _ms(seconds: list[float], q: float) -> float | None:
    """The q-th percentile of durations in seconds, in milliseconds; None when there are none."""
    value = metrics.percentile(seconds, q)
    return None if value is None else 1000 * value


def summarise_exact(records: list[dict]) -> dict:
    done = [r for r in records if r.get("status") == "done"]
    n = len(records)
    errors = [r["error_s"] for r in records if r.get("error_s") is not None]
    latencies = [r["latency_s"] for r in done]
    reasons = Counter(reason for r in records if (reason := miss_reason(r)))
    ranks = [r["rank"] for r in records if not r["on_time"]]
    exact_marked = [r for r in records if r.get("top_exact")]
    hits, misses = [r for r in records if r["on_time"]], [r for r in records if not r["on_time"]]
    return {
        "queries": n,
        "top1_recording": sum(r["correct"] for r in records) / n,
        "top1_on_time": len(hits) / n,
        "median_offset_error_ms": _ms(errors, 50),
        "p90_offset_error_ms": _ms(errors, 90),
        "in_top10": sum(r["rank"] is not None and r["rank"] <= 10 for r in records) / n,
        "top_marked_exact": len(exact_marked) / n,
        "marked_exact_but_wrong": sum(not r["on_time"] for r in exact_marked),
        "latency_p50_ms": _ms(latencies, 50),
        "latency_p95_ms": _ms(latencies, 95),
        "misses": dict(reasons),
        "misses_true_recording_lower_in_list": sum(r is not None for r in ranks),
        "median_rms_dbfs_hits": metrics.percentile([r["rms_dbfs"] for r in hits], 50),
        "median_rms_dbfs_misses": metrics.percentile([r["rms_dbfs"] for r in misses], 50),
    }


def run_exact(cfg: EvalConfig, client: Client, recordings: list[Recording]) -> dict:
    chosen = [c for c in CONDITIONS if c.name in cfg.conditions]
    out: dict = {"conditions": [], "records": []}
    for length in cfg.lengths_s:
        for cond in chosen:
            rng = _rng(cfg.seed, "exact", cond.name, length)
            records = []
            for _ in range(cfg.queries_per_condition):
                index = int(rng.integers(len(recordings)))
                query = make_query(cond, rng, recordings, index, length)
                answer = client.search(query["data"], query["file_name"], cfg.k)
                record = judge_exact(query, answer.results)
                record.update(
                    condition=cond.name, status=answer.status, latency_s=round(answer.latency_s, 4), error=answer.error
                )
                records.append(record)
            summary = summarise_exact(records)
            summary.update(condition=cond.name, length_s=length)
            out["conditions"].append(summary)
            out["records"] += records
            cfg.log(
                f"  exact {length:g} s {cond.name:<16} top-1 {summary['top1_recording']:.2f}  on time "
                f"{summary['top1_on_time']:.2f}  median err {_fmt(summary['median_offset_error_ms'], '.0f')} ms"
                f"  p50 {_fmt(summary['latency_p50_ms'], '.0f')} ms"
            )
    return out


# -- similar ----------------------------------------------------------------------------------------------------
class SimilarResult(TypedDict):
    """One result of a similar-suite query, judged."""

    recording: str
    match_start_s: float
    match: str
    timestamped: bool  # match_start_s inside a segment of the query's class (+- the tolerance)
    recording_has_class: bool
    labels_there: list[str]


class SimilarRecord(TypedDict):
    """One similar-suite query: its answer and its judged results."""

    query: str
    label: str
    status: str
    error: str | None
    latency_s: float
    results: list[SimilarResult]


def chance_levels(recordings: list[Recording], label: str) -> tuple[float, float]:
    """Precision of a result drawn at random: (timestamped: a uniform time of a uniform recording, recording-level)."""
    step = 0.01
    timestamped = []
    for rec in recordings:
        grid = np.arange(0.0, rec.duration_s, step)
        segments = [(s.start_s, s.end_s, s.label) for s in rec.segments]
        timestamped.append(np.mean([metrics.timestamped_hit(segments, label, t, OFFSET_TOLERANCE_S) for t in grid]))
    return float(np.mean(timestamped)), float(np.mean([rec.has_label(label) for rec in recordings]))


def judge_moment(found: Recording | None, label: str, match_start_s: float) -> tuple[bool, bool]:
    """(timestamped hit, recording-level hit) of one result of a similar-moment query of class ``label``."""
    segments = [(s.start_s, s.end_s, s.label) for s in found.segments] if found else []
    return (
        metrics.timestamped_hit(segments, label, match_start_s, OFFSET_TOLERANCE_S),
        bool(found and found.has_label(label)),
    )


def run_similar(
    cfg: EvalConfig, client: Client, recordings: list[Recording], queries: list[Clip], side: Side | None = None
) -> dict:
    by_name = {r.name: r for r in recordings}
    records: list[SimilarRecord] = []
    # Per reference, per query: the judged (timestamped, recording-level) hits of its list.
    reference_hits: dict[str, list[list[tuple[bool, bool]]]] = {m: [] for m in REFERENCES}
    for clip in queries:
        data = clip.path.read_bytes()
        if side is not None:
            for method, ranked in side.rank(data, cfg.k).items():
                reference_hits[method].append(
                    [judge_moment(by_name.get(r.title), clip.label, r.match_start_s) for r in ranked]
                )
        answer = client.search(data, clip.path.name, cfg.k)
        rows: list[SimilarResult] = []
        for res in answer.results[: cfg.k]:
            found = by_name.get(res["title"])
            segments = [(s.start_s, s.end_s, s.label) for s in found.segments] if found else []
            rows.append(
                {
                    "recording": res["title"],
                    "match_start_s": res["match_start_s"],
                    "match": res["match"],
                    "timestamped": metrics.timestamped_hit(
                        segments, clip.label, res["match_start_s"], OFFSET_TOLERANCE_S
                    ),
                    "recording_has_class": bool(found and found.has_label(clip.label)),
                    "labels_there": sorted(found.labels_at(res["match_start_s"])) if found else [],
                }
            )
        records.append(
            {
                "query": clip.name,
                "label": clip.label,
                "status": answer.status,
                "error": answer.error,
                "latency_s": round(answer.latency_s, 4),
                "results": rows,
            }
        )
    summary: dict = {"queries": len(records)}
    kinds: tuple[Literal["timestamped", "recording_has_class"], ...] = ("timestamped", "recording_has_class")
    for kind in kinds:
        for k in (1, 5, 10):
            summary[f"{kind}_p@{k}"] = metrics.mean(
                [metrics.precision_at_k([r[kind] for r in rec["results"]], k) for rec in records]
            )
    # Fold 1 is not in the library: every result marked exact is a false "this very recording".
    summary["results_marked_exact"] = sum(r["match"] == "exact" for rec in records for r in rec["results"])
    summary["top_marked_exact"] = sum(bool(rec["results"]) and rec["results"][0]["match"] == "exact" for rec in records)
    false_exact = Counter({rec["query"]: sum(r["match"] == "exact" for r in rec["results"]) for rec in records})
    summary["false_exact_by_query"] = {q: n for q, n in false_exact.most_common() if n}
    summary["latency_p50_ms"] = _ms([r["latency_s"] for r in records], 50)
    summary["latency_p95_ms"] = _ms([r["latency_s"] for r in records], 95)
    per_class: dict[str, dict] = {}
    for label in sorted({c.label for c in queries}):
        mine = [rec for rec in records if rec["label"] == label]
        chance_ts, chance_rec = chance_levels(recordings, label)
        per_class[label] = {
            "queries": len(mine),
            "timestamped_p@10": metrics.mean(
                [metrics.precision_at_k([r["timestamped"] for r in m["results"]], 10) for m in mine]
            ),
            "recording_has_class_p@10": metrics.mean(
                [metrics.precision_at_k([r["recording_has_class"] for r in m["results"]], 10) for m in mine]
            ),
            "chance_timestamped": chance_ts,
            "chance_recording_has_class": chance_rec,
        }
    summary["per_class"] = per_class
    summary["chance_timestamped"] = metrics.mean([per_class[c]["chance_timestamped"] for c in per_class])
    summary["chance_recording_has_class"] = metrics.mean(
        [per_class[c]["chance_recording_has_class"] for c in per_class]
    )
    # What the wrong timestamped results pointed at, by the class sitting there.
    confusions: Counter = Counter()
    for rec in records:
        for r in rec["results"]:
            if not r["timestamped"]:
                confusions[(rec["label"], "/".join(r["labels_there"]) or "?")] += 1
    summary["top_confusions"] = [
        {"query_class": q, "found_class": f, "results": n} for (q, f), n in confusions.most_common(10)
    ]
    if side is not None:
        summary["references"] = {
            method: {
                f"{kind}_p@10": metrics.mean([metrics.precision_at_k([h[i] for h in one], 10) for one in hits])
                for i, kind in enumerate(kinds)
            }
            for method, hits in reference_hits.items()
        }
    cfg.log(
        f"  similar: timestamped P@1/5/10 {summary['timestamped_p@1']:.3f} / {summary['timestamped_p@5']:.3f} / "
        f"{summary['timestamped_p@10']:.3f}; recording-level {summary['recording_has_class_p@10']:.3f} (P@10)"
    )
    return {"summary": summary, "records": records}


# -- clips ------------------------------------------------------------------------------------------------------
ClipsRecord = TypedDict(
    "ClipsRecord",
    {
        "query": str,
        "label": str,
        "fold": int,
        "status": str,
        "latency_s": float,
        "self_rank": int | None,  # where the query itself came in its list (it never counts for itself)
        "self_marked_exact": bool,
        "relevant": list[bool],  # per result other than the query: same class as the query?
        "returned": int,
        "ap": float,
        "p@1": float,
        "p@5": float,
        "p@10": float,
    },
)


def run_clips(cfg: EvalConfig, client: Client, clips: list[Clip], side: Side | None = None) -> dict:
    label_of = {c.name: c.label for c in clips}
    class_size = Counter(c.label for c in clips)
    records: list[ClipsRecord] = []
    reference_scores: dict[str, list[tuple[float, float, float]]] = {m: [] for m in REFERENCES}  # (P@1, P@10, AP)
    for i, clip in enumerate(clips):
        data = clip.path.read_bytes()
        if side is not None:
            for method, ranked in side.rank(data, cfg.clips_k + 1).items():
                rel = [label_of.get(r.title) == clip.label for r in ranked if r.title != clip.name]
                reference_scores[method].append(
                    (
                        metrics.precision_at_k(rel, 1),
                        metrics.precision_at_k(rel, 10),
                        metrics.average_precision(rel[: cfg.clips_k], class_size[clip.label] - 1),
                    )
                )
        answer = client.search(data, clip.path.name, cfg.clips_k)
        titles = [r["title"] for r in answer.results]
        self_rank = titles.index(clip.name) + 1 if clip.name in titles else None
        others = [r for r in answer.results if r["title"] != clip.name]  # the query never counts for itself
        relevant = [label_of.get(r["title"]) == clip.label for r in others]
        records.append(
            {
                "query": clip.name,
                "label": clip.label,
                "fold": clip.fold,
                "status": answer.status,
                "latency_s": round(answer.latency_s, 4),
                "self_rank": self_rank,
                "self_marked_exact": bool(self_rank and answer.results[self_rank - 1]["match"] == "exact"),
                "relevant": relevant,
                "returned": len(others),
                "ap": metrics.average_precision(relevant, class_size[clip.label] - 1),
                "p@1": metrics.precision_at_k(relevant, 1),
                "p@5": metrics.precision_at_k(relevant, 5),
                "p@10": metrics.precision_at_k(relevant, 10),
            }
        )
        if (i + 1) % 100 == 0:
            cfg.log(f"  clips: {i + 1} of {len(clips)} queries")
    summary: dict = {"queries": len(records), "list_length": cfg.clips_k}
    keys: tuple[Literal["p@1", "p@5", "p@10", "ap"], ...] = ("p@1", "p@5", "p@10", "ap")
    for key in keys:
        summary[key if key != "ap" else "map"] = metrics.mean([r[key] for r in records])
    fold1 = [r for r in records if r["fold"] == 1]
    summary["fold1_p@10"] = metrics.mean([r["p@10"] for r in fold1])
    summary["self_first"] = sum(r["self_rank"] == 1 for r in records) / len(records)
    summary["self_marked_exact"] = sum(r["self_marked_exact"] for r in records) / len(records)
    summary["latency_p50_ms"] = _ms([r["latency_s"] for r in records], 50)
    summary["latency_p95_ms"] = _ms([r["latency_s"] for r in records], 95)
    summary["per_class"] = {
        label: {
            "p@10": metrics.mean([r["p@10"] for r in records if r["label"] == label]),
            "map": metrics.mean([r["ap"] for r in records if r["label"] == label]),
        }
        for label in sorted(class_size)
    }
    summary["chance_p@k"] = metrics.mean([(class_size[c.label] - 1) / (len(clips) - 1) for c in clips])
    if side is not None:
        summary["references"] = {
            method: {key: metrics.mean([s[j] for s in rows]) for j, key in enumerate(("p@1", "p@10", "map"))}
            for method, rows in reference_scores.items()
        }
    cfg.log(
        f"  clips: P@1/5/10 {summary['p@1']:.3f} / {summary['p@5']:.3f} / {summary['p@10']:.3f}, "
        f"mAP@{cfg.clips_k} {summary['map']:.3f}"
    )
    return {"summary": summary, "records": records}


def clips_outside(recordings: list[Recording], clips: list[Clip]) -> list[Clip]:
    """The clips no recording is made of: fold 1 (the similar suite's queries) and the clips left over."""
    inside = {s.clip for r in recordings for s in r.segments}
    return [c for c in clips if c.name not in inside]


def run_same_sounds(cfg: EvalConfig, client: Client, clips: list[Clip]) -> dict:
    """Clip-level P@10 of the similar suite's very queries, against the very clips its recordings are made of.

    The clip suite's library also holds the other fold-1 clips, and ESC-50 cuts each fold's clips from its own
    source recordings: a fold-1 query there finds its siblings (a second cut of its own dog), which the similar
    suite's library by design lacks. So for this pass the clips outside the recordings are deleted, and added
    back after it (an interrupted run leaves them out; the next run adds them again).
    """
    recordings, _ = recordings_library(cfg, clips, with_audio=False)
    away = clips_outside(recordings, clips)
    items = client.library_items() or {}
    label_of = {c.name: c.label for c in clips}
    cfg.log(f"  same sounds: {len(away)} clips outside the recordings leave the library for this pass")
    for clip in away:
        client.delete(items[clip.name]["clip_id"])
    # A deleted clip leaves the results at once; its shard stops using it (as a neighbour, in a query expansion)
    # when the tombstone task, sent with each delete, has run: a moment's wait.
    time.sleep(1.0)
    try:
        precision = []
        for clip in (c for c in clips if c.fold == 1):
            answer = client.search(clip.path.read_bytes(), clip.path.name, cfg.k)
            titles = [r["title"] for r in answer.results[: cfg.k]]
            precision.append(metrics.precision_at_k([label_of.get(t) == clip.label for t in titles], cfg.k))
    finally:
        failures = client.add([(c.path, c.name, [c.label]) for c in away], log=cfg.log)
    if failures:
        raise LibraryMismatch(f"{len(failures)} clip(s) could not be added back: {failures[:5]}")
    summary = {"queries": len(precision), "library_clips": len(clips) - len(away), "p@10": metrics.mean(precision)}
    cfg.log(f"  same sounds: clip-level P@10 of the fold-1 queries {summary['p@10']:.3f}")
    return summary


# -- running and reporting --------------------------------------------------------------------------------------
def _client(cfg: EvalConfig, url: str, library: str) -> Client:
    """The Echovids at ``url``, or with ``cfg.offline`` one in this process with its library under ``cfg.out``."""
    if cfg.offline:
        from evaluation.offline import OfflineClient

        return OfflineClient(cfg.out / "offline" / library)
    return EchovidsClient(url, cfg.api_key, cfg.timeout_s)


def run(cfg: EvalConfig) -> dict:
    cfg.out.mkdir(parents=True, exist_ok=True)
    clips = load_clips(cfg.esc10)
    report: dict = {
        "started": cfg.started.isoformat(timespec="seconds"),
        "dataset": {
            "name": "ESC-10 (K. J. Piczak, ESC, ACM MM 2015)",
            "licence": "CC BY 3.0",
            "path": str(cfg.esc10),
            "clips": len(clips),
        },
        "machine": machine_info(),
        "settings": {
            "url": "offline" if cfg.offline else cfg.url,
            "clips_url": "offline" if cfg.offline else cfg.clips_url or cfg.url,
            "seed": cfg.seed,
            "queries_per_condition": cfg.queries_per_condition,
            "lengths_s": list(cfg.lengths_s),
            "conditions": list(cfg.conditions),
            "library_seed": cfg.library_seed,
            "k": cfg.k,
            "clips_k": cfg.clips_k,
            "offset_tolerance_s": OFFSET_TOLERANCE_S,
        },
        "suites": {},
    }
    if {"exact", "similar", "text"} & set(cfg.suites):
        client = _client(cfg, cfg.url, "recordings")
        report["service"] = client.config()
        recordings, left_over = recordings_library(cfg, clips, with_audio=True)
        folder = cfg.out / "library"
        folder.mkdir(exist_ok=True)
        wanted = {}
        for rec in recordings:
            path = folder / f"{rec.name}.wav"
            if not path.exists():
                write_wav(path, rec.waveform)
            wanted[rec.name] = (path, sorted({s.label for s in rec.segments}))
        (cfg.out / "ground_truth.json").write_text(
            json.dumps(
                {"recordings": [r.truth() for r in recordings], "left_out_clips": [c.name for c in left_over]}, indent=1
            )
        )
        cfg.log(
            f"recordings library: {len(recordings)} recordings of {cfg.clips_per_recording} clips "
            f"({len(left_over)} clips of folds 2-5 left over) at {client.url}"
        )
        report["recordings_library"] = {
            **ensure_library(client, wanted, cfg),
            "recordings": len(recordings),
            "clips_left_out": [c.name for c in left_over],
        }
        if "exact" in cfg.suites:
            report["suites"]["exact"] = run_exact(cfg, client, recordings)
        if "similar" in cfg.suites:
            side = Side.beside(client, {t: p for t, (p, _) in wanted.items()}, cfg.out / "references" / "recordings")
            fold1 = [c for c in clips if c.fold == 1]
            report["suites"]["similar"] = run_similar(cfg, client, recordings, fold1, side)
        if "text" in cfg.suites:
            text = report["suites"].setdefault("text", {})
            text["recordings"] = text_suite.run_text_recordings(client, recordings, cfg.k, log=cfg.log)
        client.close()
    if {"clips", "text"} & set(cfg.suites):
        client = _client(cfg, cfg.clips_url or cfg.url, "clips")
        report.setdefault("service", client.config())
        cfg.log(f"clips library: the {len(clips)} ESC-10 clips at {client.url}")
        report["clips_library"] = ensure_library(client, {c.name: (c.path, [c.label]) for c in clips}, cfg)
        if "text" in cfg.suites:
            text = report["suites"].setdefault("text", {})
            zero_shot_k = min(cfg.clips_k, client.config().get("max_k", cfg.clips_k))
            text["clips"] = text_suite.run_text_clips(client, clips, cfg.k, zero_shot_k, log=cfg.log)
        if "clips" in cfg.suites:
            side = Side.beside(client, {c.name: c.path for c in clips}, cfg.out / "references" / "clips")
            report["suites"]["clips"] = run_clips(cfg, client, clips, side)
            report["suites"]["clips"]["same_sounds"] = run_same_sounds(cfg, client, clips)
        client.close()
    if "synthetic" in cfg.suites:
        from evaluation import synthetic_suite

        client = _client(cfg, cfg.url, "synthetic")
        report.setdefault("service", client.config())
        seed = cfg.seed if cfg.synthetic_seed is None else cfg.synthetic_seed
        report["settings"]["synthetic_seed"] = seed
        report["suites"]["synthetic"] = synthetic_suite.run_synthetic(cfg, client, clips, seed)
        client.close()
    if "folds" in cfg.suites:
        from evaluation import folds

        # The service's code in this process whatever --offline says: it sweeps the re-scoring's constants.
        report["suites"]["folds"] = folds.run(cfg.esc10, cfg.out / "folds", cfg.seed, cfg.log)
    report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    report["machine"]["load_average_at_end"] = machine_info()["load_average"]
    (cfg.out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    (cfg.out / "report.md").write_text(markdown(report))
    return report


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [
        f"# Echovids quality: {report['started']}",
        "",
        f"Dataset: {report['dataset']['name']}, {report['dataset']['licence']}. "
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, load average "
        f"{report['machine']['load_average'][0]:.1f} at the start, "
        f"{report['machine'].get('load_average_at_end', ['-'])[0]} at the end. "
        f"Seed {s['seed']}, {s['queries_per_condition']} queries per condition, library seed {s['library_seed']}.",
        "",
    ]
    suites = report["suites"]
    if "exact" in suites:
        rows = suites["exact"]["conditions"]
        lengths = sorted({r["length_s"] for r in rows})
        names = list(dict.fromkeys(r["condition"] for r in rows))
        cell = {(r["condition"], r["length_s"]): r for r in rows}
        lines += [
            "## Exact moment: top-1 recording with offset error <= 0.5 s",
            "",
            "| condition | " + " | ".join(f"{x:g} s" for x in lengths) + " |",
            "|---|" + "---|" * len(lengths),
        ]
        for name in names:
            lines.append(
                f"| {name} | "
                + " | ".join(
                    _fmt(cell[(name, x)]["top1_on_time"], ".2f") if (name, x) in cell else "-" for x in lengths
                )
                + " |"
            )
        lines += [
            "",
            "## Exact moment: all measures",
            "",
            "| condition | length | n | top-1 rec | top-1 <= 0.5 s | median offset err ms | top marked exact "
            "| marked exact but wrong | p50 ms | p95 ms |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['condition']} | {r['length_s']:g} s | {r['queries']} | {r['top1_recording']:.2f} | "
                f"{r['top1_on_time']:.2f} | {_fmt(r['median_offset_error_ms'], '.0f')} | {r['top_marked_exact']:.2f} | "
                f"{r['marked_exact_but_wrong']} | {_fmt(r['latency_p50_ms'], '.0f')} | "
                f"{_fmt(r['latency_p95_ms'], '.0f')} |"
            )
        reasons = [
            "the interfering recording won",
            "another recording won",
            "right recording, offset off by > 0.5 s",
            "no result",
            "search failed",
        ]
        lines += [
            "",
            "## Exact moment: why the misses missed",
            "",
            "| condition | length | misses | " + " | ".join(reasons) + " | true rec. lower in top 10 | "
            "median excerpt level dBFS, hits / misses |",
            "|---|---|---|" + "---|" * (len(reasons) + 2),
        ]
        for r in rows:
            total = r["queries"] - round(r["top1_on_time"] * r["queries"])
            lines.append(
                f"| {r['condition']} | {r['length_s']:g} s | {total} | "
                + " | ".join(str(r["misses"].get(x, 0)) for x in reasons)
                + f" | {r['misses_true_recording_lower_in_list']} | "
                f"{_fmt(r['median_rms_dbfs_hits'], '.0f')} / {_fmt(r['median_rms_dbfs_misses'], '.0f')} |"
            )
        lines.append("")
    if "similar" in suites:
        m = suites["similar"]["summary"]
        lines += [
            "## Similar moment: fold-1 clips against recordings of folds 2-5",
            "",
            f"{m['queries']} queries. A result is a timestamped hit when its `match_start_s` is inside a segment "
            "of the query's class (+-0.5 s); recording-level when the recording holds the class anywhere.",
            "",
            "| precision | @1 | @5 | @10 | chance |",
            "|---|---|---|---|---|",
            f"| timestamped | {m['timestamped_p@1']:.3f} | {m['timestamped_p@5']:.3f} | "
            f"{m['timestamped_p@10']:.3f} | {m['chance_timestamped']:.3f} |",
            f"| recording-level | {m['recording_has_class_p@1']:.3f} | {m['recording_has_class_p@5']:.3f} | "
            f"{m['recording_has_class_p@10']:.3f} | {m['chance_recording_has_class']:.3f} |",
            "",
            f"Results marked exact (none should be: fold 1 is not in the library): {m['results_marked_exact']} "
            f"of {m['queries'] * 10} results, from {len(m['false_exact_by_query'])} queries; "
            f"the top result marked exact for {m['top_marked_exact']} queries. "
            f"Latency p50 {m['latency_p50_ms']:.0f} ms, p95 {m['latency_p95_ms']:.0f} ms.",
            "",
            *side_by_side(
                {
                    "system": {k: m[k] for k in ("timestamped_p@10", "recording_has_class_p@10")},
                    **m.get("references", {}),
                },
                ("timestamped_p@10", "recording_has_class_p@10"),
            ),
            "| class | timestamped P@10 | recording-level P@10 | chance (timestamped) |",
            "|---|---|---|---|",
        ]
        for label, c in m["per_class"].items():
            lines.append(
                f"| {label} | {c['timestamped_p@10']:.3f} | {c['recording_has_class_p@10']:.3f} | "
                f"{c['chance_timestamped']:.3f} |"
            )
        lines.append("")
    if "clips" in suites:
        m = suites["clips"]["summary"]
        lines += [
            "## Similar sounds, clip level: each ESC-10 clip against the other 399",
            "",
            "| P@1 | P@5 | P@10 | mAP@" + str(m["list_length"]) + " | P@10 of the fold-1 queries | chance P@k |",
            "|---|---|---|---|---|---|",
            f"| {m['p@1']:.3f} | {m['p@5']:.3f} | {m['p@10']:.3f} | {m['map']:.3f} | {m['fold1_p@10']:.3f} | "
            f"{m['chance_p@k']:.3f} |",
            "",
            f"The query itself (excluded from its results) came first in {m['self_first']:.1%} of its lists, "
            f"marked exact in {m['self_marked_exact']:.1%}. Latency p50 {m['latency_p50_ms']:.0f} ms, "
            f"p95 {m['latency_p95_ms']:.0f} ms.",
            "",
            *side_by_side(
                {"system": {k: m[k] for k in ("p@1", "p@10", "map")}, **m.get("references", {})}, ("p@1", "p@10", "map")
            ),
            "| class | P@10 | mAP |",
            "|---|---|---|",
        ]
        for label, c in m["per_class"].items():
            lines.append(f"| {label} | {c['p@10']:.3f} | {c['map']:.3f} |")
        lines.append("")
        same = suites["clips"].get("same_sounds")
        if same:
            lines += [
                f"Clip level, the same queries as the similar suite against the same sounds: the {same['queries']} "
                f"fold-1 clips against the {same['library_clips']} clips the recordings are made of (the others "
                f"deleted for that pass): P@10 {same['p@10']:.3f}.",
                "",
            ]
    if "similar" in suites and "clips" in suites and "same_sounds" in suites["clips"]:
        timestamped = suites["similar"]["summary"]["timestamped_p@10"]
        lines += [
            "## Timestamped against clip level, the same fold-1 queries (P@10)",
            "",
            "| similar moment, timestamped | clip level, the same sounds as clips | clip level, all 399 other clips |",
            "|---|---|---|",
            f"| {timestamped:.3f} | {suites['clips']['same_sounds']['p@10']:.3f} | "
            f"{suites['clips']['summary']['fold1_p@10']:.3f} |",
            "",
        ]
    if "folds" in suites:
        lines += folds_markdown(suites["folds"])
    if "text" in suites:
        lines += text_suite.markdown(suites["text"])
    if "synthetic" in suites:
        from evaluation import synthetic_suite

        lines += synthetic_suite.markdown(suites["synthetic"])
    return "\n".join(lines)


def side_by_side(rows: dict[str, dict], keys: tuple[str, ...]) -> list[str]:
    """This system and the references (evaluation/references.py), same library, same queries, same run."""
    if len(rows) < 2:
        return []
    return [
        "| method | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
        *(f"| {name} | " + " | ".join(_fmt(r.get(k)) for k in keys) + " |" for name, r in rows.items()),
        "",
    ]


def folds_markdown(f: dict) -> list[str]:
    def table(rows: dict[str, dict]) -> list[str]:
        return [
            "| method | P@10 | minus clip mean | 95 % interval of that |",
            "|---|---|---|---|",
            *(
                f"| {name} | {r['p@10']:.3f} | {r['vs_clip_mean']:+.3f} | "
                f"{r['vs_clip_mean_95'][0]:+.3f} .. {r['vs_clip_mean_95'][1]:+.3f} |"
                for name, r in rows.items()
            ),
            "",
        ]

    lines = ["## Similar sounds out of sample (clip level, P@10, k = 10)", ""]
    for split in f["splits"]:
        tune, held = "".join(map(str, split["tune_folds"])), "".join(map(str, split["report_folds"]))
        lines += [f"Tuned on folds {tune}, reported on folds {held}; chosen: `{split['chosen']}`.", ""]
        lines += table(split["report"])
    lines += ["All 400 ESC-10 clips (in sample):", "", *table(f["all_esc10"])]
    syn = f["synthetic"]
    lines += [f"{syn['sounds']} synthetic sounds (seed {syn['seed']}), similar = same kind:", "", *table(syn["report"])]
    return lines
