"""Landmark index: extraction speed on real recordings, and query latency over a large index.

Extraction runs on the ESC-10 recordings (real field audio). The large index is built from hashes whose
three parts (first peak's bin, bin step, time step) are drawn from those parts' distributions in the same
recordings, family by family (peak, steady, fine steady and onset pairs, each in its share), so common bins are
common, as in real audio, without repeating 10 minutes of hashes 600 times over, at the extraction's own
hashes-per-second rate, with random clips and times.
"""

from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass

import numpy as np

from echovids import audio_params, landmarks, onsets
from evaluation.dataset import load_clips, load_waveform
from services.search.landmark_index import LandmarkPostings

RECORDING_S = 60.0


@dataclass
class LandmarkReport:
    audio_s_extracted: float
    extract_x_realtime: float  # seconds of audio per second of extraction (library side)
    hashes_per_audio_s: float
    hashes_per_s: float  # extraction throughput
    family_per_audio_s: dict[str, float]  # hashes a second of audio, by family
    query_extract_ms: float  # a 5 s query, 4 sub-hop shifts
    hours: float
    postings: int
    build_s: float
    index_mb: float
    query_p50_ms: float
    query_p95_ms: float
    peak_rss_mb: float


def run(hours: float = 1000.0, queries: int = 50, seed: int = 0) -> LandmarkReport:
    rng = np.random.default_rng(seed)
    clips = load_clips()
    audio = np.concatenate([load_waveform(c, 5.0) for c in clips[:120]])  # 10 min of real recordings
    started = time.perf_counter()
    marks = landmarks.extract(audio)
    extract_s = time.perf_counter() - started
    audio_s = audio.size / audio_params.SAMPLE_RATE
    rate = len(marks) / audio_s

    excerpts = [audio[int(o * 16000) : int(o * 16000) + 5 * 16000] for o in rng.uniform(0, audio_s - 5, queries)]
    started = time.perf_counter()
    query_marks = [landmarks.extract_query(x) for x in excerpts]
    query_extract_ms = (time.perf_counter() - started) * 1000 / queries

    families = {
        "peak": ~landmarks.is_steady(marks.hashes) & ~onsets.is_onset(marks.hashes),
        "steady": landmarks.is_steady(marks.hashes) & ((marks.hashes & landmarks.FINE_FLAG) == 0),
        "fine_steady": (marks.hashes & landmarks.FINE_FLAG) != 0,
        "onset": onsets.is_onset(marks.hashes),
    }
    total = int(hours * 3600 * rate)
    recordings = max(1, int(hours * 3600 / RECORDING_S))
    started = time.perf_counter()
    postings = LandmarkPostings()
    chunk = 20_000_000  # added in parts, as shards take in clips
    for first in range(0, total, chunk):
        n = min(chunk, total - first)
        family = rng.choice(len(families), size=n, p=[m.mean() for m in families.values()])
        hashes = np.empty(n, dtype=np.uint32)
        for code, mask in enumerate(families.values()):
            own, drawn = marks.hashes[mask], family == code
            size = int(drawn.sum())
            hashes[drawn] = (
                (rng.choice(own >> 13, size=size) << 13)
                | (rng.choice((own >> 6) & 0x7F, size=size) << 6)
                | rng.choice(own & 0x3F, size=size)
            )
        clip_ids = rng.integers(0, recordings, size=n, dtype=np.int32)
        times = rng.integers(0, int(RECORDING_S / landmarks.HOP_S), size=n, dtype=np.int32)
        postings.add_many(clip_ids, hashes, times)
    postings.match(query_marks[0].hashes, query_marks[0].times, np.ones(recordings, dtype=bool), 10)
    build_s = time.perf_counter() - started

    live = np.ones(recordings, dtype=bool)
    latencies = []
    for q in query_marks:
        t0 = time.perf_counter()
        postings.match(q.hashes, q.times, live, 10, q.weights)
        latencies.append((time.perf_counter() - t0) * 1000)
    return LandmarkReport(
        audio_s_extracted=round(audio_s, 1),
        extract_x_realtime=round(audio_s / extract_s, 1),
        hashes_per_audio_s=round(rate, 1),
        hashes_per_s=round(len(marks) / extract_s),
        family_per_audio_s={name: round(float(mask.sum()) / audio_s, 1) for name, mask in families.items()},
        query_extract_ms=round(query_extract_ms, 1),
        hours=hours,
        postings=len(postings),
        build_s=round(build_s, 1),
        index_mb=round(postings.nbytes / 2**20),
        query_p50_ms=round(float(np.percentile(latencies, 50)), 1),
        query_p95_ms=round(float(np.percentile(latencies, 95)), 1),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    )


def as_dict(report: LandmarkReport) -> dict[str, float]:
    return asdict(report)
