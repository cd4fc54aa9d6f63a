"""`echovids eval --suite synthetic`: seeded synthetic sounds (echovids.synthetic), per kind, in one library.

- exact: a library of long synthetic sounds (every kind, ``per_kind`` of each) beside the 400 ESC-10 clips as
  distractors; queries are 3 s excerpts at random offsets under white noise at 10 dB. A hit is the exact suite's:
  the top result is the source, its offset error <= 0.5 s (suites.judge_exact).
- short, bare: short sounds (0.25-0.9 s) added as clips of their own; the query is the sound under white noise at
  20 dB; a hit is the clip first.
- short, in context: a 5 s ESC-10 clip with a short sound mixed in at a seeded moment t, added as a recording; the
  query is the short sound alone (20 dB white noise); a hit is the recording first with its alignment within
  0.5 s of t. A clip or a query the service refuses (audio_too_short) counts as a miss, and the refusals are
  counted.
- wrongly exact: 3 s excerpts (10 dB) of sounds that are not in the library (synthetic sounds of another seed,
  and ESC-10 clips left out of it when there are any): the share with any result marked exact, and with the top
  one marked exact.

Beside the system, the two references (evaluation/references.py) rank the exact and short queries on the same
library in the same run. Sounds and queries follow ``synthetic_seed``: the same seed gives the same run.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from echovids.audio_params import SAMPLE_RATE
from echovids.errors import EchovidsError
from echovids.harness import wav_bytes, write_wav
from echovids.synthetic import KINDS, Sound, make_suite
from evaluation import degrade, metrics
from evaluation.client import Client
from evaluation.dataset import Clip, Recording, Segment, load_waveform
from evaluation.references import REFERENCES, Ranked, Side
from evaluation.suites import (
    OFFSET_TOLERANCE_S,
    Condition,
    EvalConfig,
    _fmt,
    _rng,
    ensure_library,
    judge_exact,
    make_query,
)

EXCERPT_S = 3.0
EXACT_CONDITION = Condition("white-10dB", "white-noise", 10.0)
SHORT_SNR_DB = 20.0
CONTEXT_CLIP_S = 5.0
CONTEXT_MARGIN_S = 0.5  # the short sound lies at least this far from either end of its recording
OUTSIDE_ESC10 = 20  # at most this many ESC-10 clips left out of the library give wrongly-exact queries
PARTS = ("exact", "bare", "context", "outside")


def _recording(name: str, kind: str, waveform: np.ndarray) -> Recording:
    """A sound as a recording of one segment (what make_query takes excerpts of)."""
    return Recording(name, [Segment(0.0, waveform.size / SAMPLE_RATE, name, kind)], waveform)


def _noisy(rng: np.random.Generator, waveform: np.ndarray, snr_db: float) -> bytes:
    return wav_bytes(degrade.mix_at_snr(waveform, degrade.white_noise(waveform.size, rng), snr_db))


def _source(clip: Clip) -> str:
    """The ESC-50 source recording a clip was cut from: ``esc10_dog_bark_1-100032-A`` -> ``1-100032``."""
    return clip.name.rsplit("_", 1)[-1].rsplit("-", 1)[0]


def judge_reference(ranked: list[Ranked], source: str, offset_s: float, moment_s: float) -> dict:
    """A reference's top result: the source? at the moment (+-0.5 s)? ``moment_s``: the query time its
    ``match_start_s`` stands for."""
    if not ranked:
        return {"top": None, "correct": False, "on_time": False}
    top = ranked[0]
    correct = top.title == source
    error = metrics.offset_error(top.match_start_s, moment_s, offset_s)
    return {"top": top.title, "correct": correct, "on_time": correct and error <= OFFSET_TOLERANCE_S}


class Run:
    """One run of the suite: the library's titles, the client, the references, the records."""

    def __init__(self, cfg: EvalConfig, client: Client, seed: int) -> None:
        self.cfg, self.client, self.seed = cfg, client, seed
        self.folder = cfg.out / "synthetic" / f"s{seed}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.side: Side | None = None
        self.records: list[dict] = []

    def title(self, name: str) -> str:
        return f"syn{self.seed}-{name}"

    def file(self, title: str, waveform: np.ndarray) -> Path:
        path = self.folder / f"{title}.wav"
        if not path.exists():
            write_wav(path, waveform)
        return path

    def ask(self, part: str, kind: str, query: dict, references: bool = True) -> dict:
        """Search ``query`` (make_query's dict: data, recording, offset_s), judge it, and rank it with the
        references; a refused query is a miss."""
        answer = self.client.search(query["data"], query["file_name"], self.cfg.k)
        record = judge_exact(query, answer.results)
        record.update(
            part=part,
            kind=kind,
            status=answer.status,
            error=answer.error,
            latency_s=round(answer.latency_s, 4),
            any_exact=any(r["match"] == "exact" for r in answer.results),
        )
        if references and self.side is not None:
            try:
                lists, moment = self.side.rank_timed(query["data"], self.cfg.k)
            except EchovidsError as error:
                record["references"] = {m: {"top": None, "correct": False, "on_time": False} for m in REFERENCES}
                record["references_error"] = error.code
            else:
                record["references"] = {
                    m: judge_reference(ranked, query["recording"], query["offset_s"], moment)
                    for m, ranked in lists.items()
                }
        self.records.append(record)
        return record


def run_synthetic(cfg: EvalConfig, client: Client, clips: list[Clip], seed: int) -> dict:
    n = cfg.synthetic_per_kind
    run = Run(cfg, client, seed)
    cfg.log(f"synthetic suite: seed {seed}, {n} sounds per kind, at {client.url}")
    long_sounds = make_suite(seed, n, lengths=("long",))
    shorts = make_suite(seed, 2 * n, lengths=("short",))
    bare = [s for s in shorts if int(s.name.rsplit("_", 1)[1]) < n]
    in_context = [s for s in shorts if int(s.name.rsplit("_", 1)[1]) >= n]

    # The library: long sounds, ESC-10 distractors, short sounds mixed into ESC-10 clips, bare short sounds.
    wanted: dict[str, tuple[Path, list[str]]] = {}
    long_recordings = []
    for sound in long_sounds:
        title = run.title(sound.name)
        wanted[title] = (run.file(title, sound.waveform), [sound.kind])
        long_recordings.append(_recording(title, sound.kind, sound.waveform))
    if cfg.synthetic_distractors:
        wanted.update({c.name: (c.path, [c.label]) for c in clips})
    rng = _rng(seed, "synthetic", "context")
    backgrounds = [clips[int(i)] for i in rng.choice(len(clips), size=len(in_context), replace=False)]
    contexts: list[tuple[Sound, str, float, Clip]] = []
    for sound, clip in zip(in_context, backgrounds, strict=True):
        title = run.title(f"ctx-{sound.name}")
        at = float(rng.uniform(CONTEXT_MARGIN_S, CONTEXT_CLIP_S - sound.duration_s - CONTEXT_MARGIN_S))
        mix = load_waveform(clip, CONTEXT_CLIP_S)
        start = round(at * SAMPLE_RATE)
        mix[start : start + sound.waveform.size] += sound.waveform
        wanted[title] = (run.file(title, degrade.normalise_peak(mix)), [sound.kind, clip.label])
        contexts.append((sound, title, round(start / SAMPLE_RATE, 4), clip))
    # A short sound the service refuses is a miss, not an error: they are added apart from the others.
    bare_files = {run.title(s.name): (run.file(run.title(s.name), s.waveform), [s.kind]) for s in bare}
    items = client.library_items() or {}
    already = {t: bare_files[t] for t in bare_files if t in items}
    library = ensure_library(client, {**wanted, **already}, cfg)
    failures = client.add(
        [(path, t, labels) for t, (path, labels) in bare_files.items() if t not in already], log=cfg.log
    )
    refused = {f.split(": ", 1)[0].rsplit(".", 1)[0] for f in failures}
    cfg.log(f"  short sounds as clips of their own: {len(bare_files) - len(refused)} added, {len(refused)} refused")
    if failures:
        cfg.log(f"  e.g. {failures[0]}")
    in_library = {t: p for t, (p, _) in wanted.items()} | {t: p for t, (p, _) in bare_files.items() if t not in refused}
    run.side = Side.beside(client, in_library, cfg.out / "references" / "synthetic")

    # exact
    rng = _rng(seed, "synthetic", "exact")
    for index, recording in enumerate(long_recordings):
        for _ in range(cfg.synthetic_queries):
            query = make_query(EXACT_CONDITION, rng, long_recordings, index, EXCERPT_S)
            run.ask("exact", recording.segments[0].label, query)
    # short, bare and in context
    rng = _rng(seed, "synthetic", "short")
    for sound in bare:
        title = run.title(sound.name)
        query = {"recording": title, "offset_s": 0.0, "data": _noisy(rng, sound.waveform, SHORT_SNR_DB)}
        record = run.ask("bare", sound.kind, {**query, "file_name": "query.wav", "length_s": sound.duration_s})
        record["refused_add"] = title in refused
    for sound, title, at, clip in contexts:
        query = {"recording": title, "offset_s": at, "data": _noisy(rng, sound.waveform, SHORT_SNR_DB)}
        record = run.ask("context", sound.kind, {**query, "file_name": "query.wav", "length_s": sound.duration_s})
        record["background"] = clip.name
    # wrongly exact: sounds the library does not hold
    rng = _rng(seed, "synthetic", "outside")
    outside_seed = (seed + 1) % 2**32
    strangers = [_recording(f"out{outside_seed}-{s.name}", s.kind, s.waveform) for s in make_suite(outside_seed, n)]
    for index, recording in enumerate(strangers):
        for _ in range(cfg.synthetic_queries):
            query = make_query(EXACT_CONDITION, rng, strangers, index, EXCERPT_S)
            run.ask("outside", recording.segments[0].label, query, references=False)
    # ESC-50 cuts several clips from one source recording (1-100032-A, -B): a cut of a source in the library is not
    # a stranger to it.
    inside = {_source(c) for c in clips if c.name in wanted} | {_source(c) for _, _, _, c in contexts}
    left_out = [c for c in clips if _source(c) not in inside]
    chosen = [left_out[int(i)] for i in rng.permutation(len(left_out))[:OUTSIDE_ESC10]]
    esc = [_recording(c.name, "esc10", load_waveform(c, CONTEXT_CLIP_S)) for c in chosen]
    for index in range(len(esc)):
        run.ask("outside", "esc10", make_query(EXACT_CONDITION, rng, esc, index, EXCERPT_S), references=False)

    summary = {part: summarise(run.records, part) for part in PARTS}
    summary["bare"]["all"]["refused_adds"] = len(refused)
    for kind, row in summary["bare"]["per_kind"].items():
        row["refused_adds"] = sum(
            r["kind"] == kind and r.get("refused_add", False) for r in run.records if r["part"] == "bare"
        )
    for part in PARTS:
        s = summary[part]["all"]
        cfg.log(
            f"  synthetic {part:<8} n {s['queries']:>4}  top-1 {_fmt(s['top1'], '.2f')}  on time "
            f"{_fmt(s['top1_on_time'], '.2f')}  top marked exact {_fmt(s['top1_exact'], '.2f')}  any exact "
            f"{_fmt(s['any_exact'], '.2f')}  refused {s['refused_queries']}"
        )
    return {
        "seed": seed,
        "settings": {
            "per_kind": n,
            "queries_per_sound": cfg.synthetic_queries,
            "esc10_distractors": cfg.synthetic_distractors,
            "excerpt_s": EXCERPT_S,
            "exact_snr_db": EXACT_CONDITION.snr(),
            "short_snr_db": SHORT_SNR_DB,
            "outside_seed": outside_seed,
            "outside_esc10_clips": len(esc),
        },
        "library": {**library, "short_clips_refused": len(refused), "refusals": failures[:5]},
        "summary": summary,
        "records": run.records,
    }


def _share(records: list[dict], key: str) -> float | None:
    return metrics.mean([float(bool(r.get(key))) for r in records])


def _row(records: list[dict]) -> dict:
    row: dict = {
        "queries": len(records),
        "refused_queries": sum(r["status"] != "done" for r in records),
        "top1": _share(records, "correct"),
        "top1_on_time": _share(records, "on_time"),
        "top1_exact": _share(records, "top_exact"),
        "any_exact": _share(records, "any_exact"),
        "marked_exact_but_wrong": sum(bool(r.get("top_exact")) and not r["on_time"] for r in records),
    }
    errors = Counter(r["error"] for r in records if r["status"] != "done")
    if errors:
        row["errors"] = dict(errors.most_common(3))
    ranked = [r for r in records if "references" in r]
    if ranked:
        row["references"] = {
            m: {
                "top1": metrics.mean([float(r["references"][m]["correct"]) for r in ranked]),
                "top1_on_time": metrics.mean([float(r["references"][m]["on_time"]) for r in ranked]),
            }
            for m in REFERENCES
        }
    return row


def summarise(records: list[dict], part: str) -> dict:
    mine = [r for r in records if r["part"] == part]
    kinds = [k for k in (*KINDS, "esc10") if any(r["kind"] == k for r in mine)]
    return {"all": _row(mine), "per_kind": {k: _row([r for r in mine if r["kind"] == k]) for k in kinds}}


def _ref(row: dict, method: str, key: str) -> str:
    return _fmt(row.get("references", {}).get(method, {}).get(key), ".2f")


def markdown(report: dict) -> list[str]:
    s, summary = report["settings"], report["summary"]
    refs = " | ".join(f"{m} top-1 | {m} on time" for m in REFERENCES)

    def table(part: str, title: str, columns: str, cells) -> list[str]:
        rows = summary[part]
        out = [title, "", columns, "|---|" + "---|" * (columns.count("|") - 2)]
        for kind, row in [*rows["per_kind"].items(), ("all", rows["all"])]:
            out.append(f"| {kind} | " + " | ".join(cells(row)) + " |")
        return [*out, ""]

    def with_refs(row: dict) -> list[str]:
        return [_ref(row, m, k) for m in REFERENCES for k in ("top1", "top1_on_time")]

    lines = [
        f"## Synthetic sounds (seed {report['seed']}): {s['per_kind']} per kind",
        "",
        f"Library: the long and short synthetic sounds, the short ones mixed into 5 s ESC-10 clips"
        f"{', and the 400 ESC-10 clips as distractors' if s['esc10_distractors'] else ''}; "
        f"{report['library']['short_clips_refused']} short sounds refused as clips of their own. "
        "References on the same library, same queries, same run.",
        "",
    ]
    lines += table(
        "exact",
        f"### Exact: {s['excerpt_s']:g} s excerpts of long sounds, white noise at {s['exact_snr_db']:g} dB "
        f"({s['queries_per_sound']} per sound)",
        f"| kind | n | top-1 | top-1 <= 0.5 s | top-1 marked exact | marked exact but wrong | {refs} |",
        lambda r: [
            str(r["queries"]),
            _fmt(r["top1"], ".2f"),
            _fmt(r["top1_on_time"], ".2f"),
            _fmt(r["top1_exact"], ".2f"),
            str(r["marked_exact_but_wrong"]),
            *with_refs(r),
        ],
    )
    lines += table(
        "bare",
        f"### Short sounds (0.25-0.9 s) as clips of their own; the query: the sound, white noise at "
        f"{s['short_snr_db']:g} dB",
        f"| kind | n | clips refused | queries refused | top-1 | top-1 marked exact | {refs} |",
        lambda r: [
            str(r["queries"]),
            str(r.get("refused_adds", "-")),
            str(r["refused_queries"]),
            _fmt(r["top1"], ".2f"),
            _fmt(r["top1_exact"], ".2f"),
            *with_refs(r),
        ],
    )
    lines += table(
        "context",
        "### Short sounds inside a 5 s ESC-10 clip; the query: the sound alone "
        f"(white noise at {s['short_snr_db']:g} dB); on time: aligned within 0.5 s of where it lies",
        f"| kind | n | queries refused | top-1 | top-1 <= 0.5 s | top-1 marked exact | {refs} |",
        lambda r: [
            str(r["queries"]),
            str(r["refused_queries"]),
            _fmt(r["top1"], ".2f"),
            _fmt(r["top1_on_time"], ".2f"),
            _fmt(r["top1_exact"], ".2f"),
            *with_refs(r),
        ],
    )
    lines += table(
        "outside",
        f"### Wrongly exact: {s['excerpt_s']:g} s excerpts of sounds not in the library (synthetic seed "
        f"{s['outside_seed']}; {s['outside_esc10_clips']} ESC-10 clips left out); target <= 1 %",
        "| kind | n | queries refused | any result marked exact | top-1 marked exact |",
        lambda r: [
            str(r["queries"]),
            str(r["refused_queries"]),
            _fmt(r["any_exact"], ".3f"),
            _fmt(r["top1_exact"], ".3f"),
        ],
    )
    return lines
