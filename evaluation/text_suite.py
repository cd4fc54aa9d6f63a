"""`echovids eval --suite text`: search by description, measured on ESC-10 through the API (or --offline).

- clip library (the 400 single clips): each of the 30 descriptions (evaluation/text_queries.json, three per class,
  as a person would type them), P@10: the share of its first 10 results of the described class;
- zero-shot: each clip is given the class whose descriptions score it highest, plain and with each class's
  scores standardised over the clips first (a class whose sounds YAMNet hears loudly no longer takes every clip);
- recordings library (folds 2-5 joined into recordings, as the similar suite builds it): a result is a
  timestamped hit when its ``match_start_s`` lies inside a segment of the described class, +-0.5 s; at k = 10.

Through the API a search returns at most ECHOVIDS_MAX_K results, so the zero-shot scores come from each
description's first ``zero_shot_k`` results; a clip none of them returned scores 0 for that class.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evaluation import metrics
from evaluation.client import Client
from evaluation.dataset import Clip, Recording

QUERIES = Path(__file__).resolve().parent / "text_queries.json"
OFFSET_TOLERANCE_S = 0.5


def load_descriptions(path: Path = QUERIES) -> dict[str, list[str]]:
    """ESC-10 class -> its three descriptions."""
    return {label: entry["queries"] for label, entry in json.loads(path.read_text())["esc10"].items()}


def _ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


def run_text_clips(client: Client, clips: list[Clip], k: int, zero_shot_k: int, log=print) -> dict:
    """P@k of each description on the clip library, and zero-shot accuracy over the classes."""
    descriptions = load_descriptions()
    label_of = {c.name: c.label for c in clips}
    names = [c.name for c in clips]
    position = {name: i for i, name in enumerate(names)}
    classes = sorted(descriptions)
    scores = np.zeros((len(classes), len(names)))  # mean over a class's descriptions of each clip's score
    records: list[dict] = []
    latencies: list[float] = []
    for ci, label in enumerate(classes):
        for text in descriptions[label]:
            answer = client.text_search(text, max(k, zero_shot_k))
            latencies.append(answer.latency_s)
            titles = [r["title"] for r in answer.results]
            relevant = [label_of.get(t) == label for t in titles]
            records.append(
                {
                    "text": text,
                    "label": label,
                    "status": answer.status,
                    "error": answer.error,
                    "p@10": metrics.precision_at_k(relevant, k),
                    "top": [(t, label_of.get(t)) for t in titles[:k]],
                    "text_classes": answer.text_classes[:5],
                }
            )
            for r in answer.results:
                if r["title"] in position:
                    scores[ci, position[r["title"]]] += r["score"] / len(descriptions[label])
    truth = np.array([label_of[n] for n in names])
    guessed = np.array(classes)[np.argmax(scores, axis=0)]
    standard = (scores - scores.mean(axis=1, keepdims=True)) / np.maximum(scores.std(axis=1, keepdims=True), 1e-9)
    guessed_standard = np.array(classes)[np.argmax(standard, axis=0)]
    per_class = {
        label: {
            "p@10": metrics.mean([r["p@10"] for r in records if r["label"] == label]),
            "zero_shot": metrics.mean(list(guessed[truth == label] == label)),
        }
        for label in classes
    }
    summary = {
        "descriptions": len(records),
        "p@10": metrics.mean([r["p@10"] for r in records]),
        "zero_shot": float(np.mean(guessed == truth)),
        "zero_shot_standardised": float(np.mean(guessed_standard == truth)),
        "zero_shot_k": zero_shot_k,
        "clips_unscored": int(np.sum(scores.max(axis=0) == 0)),
        "latency_p50_ms": _ms(latencies, 50),
        "latency_p95_ms": _ms(latencies, 95),
        "per_class": per_class,
    }
    log(
        f"  text, clips: P@10 {summary['p@10']:.3f}; zero-shot {summary['zero_shot']:.3f} plain, "
        f"{summary['zero_shot_standardised']:.3f} standardised"
    )
    return {"summary": summary, "records": records}


def run_text_recordings(client: Client, recordings: list[Recording], k: int, log=print) -> dict:
    """Timestamped hits at k of each description on the recordings library."""
    by_name = {r.name: r for r in recordings}
    records: list[dict] = []
    latencies: list[float] = []
    for label, texts in sorted(load_descriptions().items()):
        for text in texts:
            answer = client.text_search(text, k)
            latencies.append(answer.latency_s)
            hits = []
            for res in answer.results[:k]:
                found = by_name.get(res["title"])
                segments = [(s.start_s, s.end_s, s.label) for s in found.segments] if found else []
                hits.append(metrics.timestamped_hit(segments, label, res["match_start_s"], OFFSET_TOLERANCE_S))
            records.append(
                {
                    "text": text,
                    "label": label,
                    "status": answer.status,
                    "error": answer.error,
                    "timestamped_p@10": metrics.precision_at_k(hits, k),
                    "hits": hits,
                }
            )
    summary = {
        "descriptions": len(records),
        "timestamped_p@1": metrics.mean([metrics.precision_at_k(r["hits"], 1) for r in records]),
        "timestamped_p@10": metrics.mean([r["timestamped_p@10"] for r in records]),
        "latency_p50_ms": _ms(latencies, 50),
        "latency_p95_ms": _ms(latencies, 95),
        "per_class": {
            label: metrics.mean([r["timestamped_p@10"] for r in records if r["label"] == label])
            for label in sorted({r["label"] for r in records})
        },
    }
    log(f"  text, recordings: timestamped P@1 {summary['timestamped_p@1']:.3f}, P@10 {summary['timestamped_p@10']:.3f}")
    return {"summary": summary, "records": records}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(text: dict) -> list[str]:
    lines = ["## Search by description (text)", ""]
    clips = text.get("clips", {}).get("summary")
    recs = text.get("recordings", {}).get("summary")
    if clips:
        lines += [
            f"Clip library, {clips['descriptions']} descriptions: P@10 {clips['p@10']:.3f}; zero-shot over the "
            f"ten classes {clips['zero_shot']:.3f} plain, {clips['zero_shot_standardised']:.3f} standardised "
            f"(scores from each description's first {clips['zero_shot_k']} results; {clips['clips_unscored']} "
            f"clips returned by none). Latency p50 {clips['latency_p50_ms']} ms.",
            "",
            "| class | P@10 | zero-shot |",
            "|---|---|---|",
            *(f"| {label} | {_fmt(c['p@10'])} | {_fmt(c['zero_shot'])} |" for label, c in clips["per_class"].items()),
            "",
        ]
    if recs:
        lines += [
            f"Recordings library: timestamped hits (matched moment inside a segment of the class, +-0.5 s) "
            f"P@1 {recs['timestamped_p@1']:.3f}, P@10 {recs['timestamped_p@10']:.3f}; latency p50 "
            f"{recs['latency_p50_ms']} ms.",
            "",
        ]
    return lines
