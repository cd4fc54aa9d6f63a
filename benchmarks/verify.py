"""`echovids bench verify`: what the merge's waveform verification costs a query, on against off in one run.

The library is the 320 ESC-10 clips of folds 2-5 in one shard, their audio stored as WAV (read in place) or as the
original OGG files (read through ffmpeg, as a library of uploaded OGGs is). Two kinds of query: 3 s excerpts of
library clips under white noise at 20 dB (copies: an exact landmark match is verified, and the check stops there),
and the fold-1 clips (new sounds: every candidate checked is read and none verifies). Each query is timed in this
process from its waveform to its ranked list (``query_arrays``, ``search_shard``, ``rank_answers``); "off" is the
same ranking without the query's audio, which is how a search that keeps none is ranked.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from echovids.audio import decode_file
from echovids.audio_params import SAMPLE_RATE
from echovids.harness import machine_info, write_wav
from evaluation import degrade
from evaluation.dataset import DEFAULT_ESC10, load_clips
from evaluation.offline import OfflineClient

EXCERPT_S = 3.0
COPY_SNR_DB = 20.0


def run(queries: int = 30, repeats: int = 3, stored: str = "wav", esc10: Path = DEFAULT_ESC10) -> dict:
    from services.embedder.tasks import query_arrays
    from services.search.query import rank_answers, search_shard, sent_to_merge
    from services.search.verify import file_window

    clips = load_clips(esc10)
    library = [c for c in clips if c.fold != 1]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="echovids-bench-verify-") as tmp:
        folder = Path(tmp)
        client = OfflineClient(folder / "index")
        if stored == "wav":
            files = [(write_wav(folder / f"{c.name}.wav", decode_file(c.path)), c.name, [c.label]) for c in library]
        else:
            files = [(c.path, c.name, [c.label]) for c in library]
        client.add(files, log=lambda _line: None)
        client.index.refresh()
        n = round(EXCERPT_S * SAMPLE_RATE)
        copies = []
        for clip in rng.choice(len(library), size=queries, replace=False):
            waveform = decode_file(library[int(clip)].path)
            start = int(rng.integers(0, max(1, waveform.size - n)))
            excerpt = waveform[start : start + n]
            copies.append(degrade.mix_at_snr(excerpt, degrade.white_noise(excerpt.size, rng), COPY_SNR_DB))
        news = [decode_file(c.path) for c in clips if c.fold == 1][:queries]

        def median_ms(batch: list[np.ndarray], verify: bool) -> float:
            times = []
            for query in batch:
                started = time.perf_counter()
                arrays = query_arrays(client.model, query)
                found = search_shard(client.index, client.model.space.key, arrays, limit=100, k=10)
                audio = (lambda q=query: q) if verify else (lambda: None)
                sent = sent_to_merge(found, 10)  # what a shard sends the merge
                rank_answers(sent, 10, audio, lambda clip, at, s: file_window(client.paths[clip], at, s))
                times.append(time.perf_counter() - started)
            return 1000 * float(np.median(times))

        rounds = []
        for _ in range(repeats):  # on and off alternate, so drift in the machine's load falls on both
            rounds.append(
                {
                    "copies_on_ms": median_ms(copies, True),
                    "copies_off_ms": median_ms(copies, False),
                    "new_on_ms": median_ms(news, True),
                    "new_off_ms": median_ms(news, False),
                }
            )
    return {
        "stored": stored,
        "queries": queries,
        "rounds": rounds,
        "copies_ratio": float(np.median([r["copies_on_ms"] / r["copies_off_ms"] for r in rounds])),
        "new_ratio": float(np.median([r["new_on_ms"] / r["new_off_ms"] for r in rounds])),
        "machine": machine_info(),
    }
