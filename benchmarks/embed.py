"""Embedder benchmark: decode, front end and model measured apart, then end to end. `echovids bench embed`.

On generated audio (a mix of tones, chirps, noise bursts and clicks, written as WAV files), for YAMNet (LiteRT)
and for the VGGish-shaped test SavedModel (tests/vggish_stub.py, loaded through tensorflow_hub as
VGGish would be):

* decode: ffmpeg to 16 kHz mono float32 (echovids.audio.decode_file), from a 16 kHz mono WAV and from a
  44.1 kHz stereo WAV (which ffmpeg must also mix and resample);
* framing: 0.975 s frames every 0.48 s (echovids.framing.frame_waveform);
* front end: the numpy log-mel (tests/melspec.py) of the whole waveform cut into [96, 64] patches.
  Neither model needs it at run time -- YAMNet's graph and VGGish's computes their own log-mel inside the model
  call, so their front-end cost is part of the "model" figure; this line says what the front end alone costs;
* model: ``embed`` called with batches of 1, 16 and 64 frames; then many 5-frame jobs (3 s queries) one after
  another, as a prefork process runs them, against 8 at a time over one ``BatchingModel``, as the threads pool
  (``ECHOVIDS_EMBEDDER_POOL=threads``) runs them;
* end to end: file -> vectors the way the embedder does a long clip (streamed decode, framing in blocks,
  embedding, decode read ahead in a thread), in a fresh process each time, whose peak resident memory is
  reported, beside the same done whole-file (decode_file + frame_waveform + one embed) to show what streaming
  saves.

Every timing is the median of ``repeats`` runs; the real-time factor is seconds of audio per second of compute.
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import reach_test_fixtures
from echovids.harness import machine_info

SR = 16_000
MODELS = ("yamnet", "vggish-stub")
# Set on import, so that the spawned end-to-end children find the test fixtures too.
reach_test_fixtures()
BATCHES = (1, 16, 64)


@dataclass
class EmbedBenchConfig:
    seconds: float = 600.0
    repeats: int = 5
    models: tuple[str, ...] = MODELS
    batches: tuple[int, ...] = BATCHES
    threads: int = 2
    e2e_seconds: float = 3600.0


@dataclass
class Row:
    stage: str
    detail: str
    seconds: float  # median compute time
    audio_s: float
    frames: int = 0
    peak_rss_mb: float | None = None
    runs: list[float] = field(default_factory=list)
    cpu: float | None = None  # median CPU seconds (all threads, and ffmpeg)

    @property
    def realtime(self) -> float:
        return self.audio_s / self.seconds if self.seconds > 0 else float("inf")

    @property
    def frames_per_s(self) -> float | None:
        return self.frames / self.seconds if self.frames and self.seconds > 0 else None


def generated_audio(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Varied sound (not silence, not one tone): 2 s segments of tone, chirp, band noise or clicks."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.empty(n, dtype=np.float32)
    seg = 2 * sr
    t = np.arange(seg) / sr
    for start in range(0, n, seg):
        kind = rng.integers(4)
        if kind == 0:
            x = np.sin(2 * np.pi * rng.uniform(100, 4000) * t)
        elif kind == 1:
            f0, f1 = rng.uniform(100, 6000, 2)
            x = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / 4))
        elif kind == 2:
            x = rng.standard_normal(seg) * np.exp(-t * rng.uniform(0.5, 4))
        else:
            x = np.zeros(seg)
            x[rng.integers(0, seg, 40)] = 1.0
        stop = min(n, start + seg)
        out[start:stop] = 0.3 * x[: stop - start]
    return out


def write_wav(path: Path, seconds: float, sr: int, channels: int) -> Path:
    """16-bit PCM WAV via ffmpeg (resampling our 16 kHz signal when ``sr`` differs)."""
    from echovids.audio import ffmpeg_exe

    samples = generated_audio(seconds)
    cmd = [
        ffmpeg_exe(),
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "f32le",
        "-ar",
        str(SR),
        "-ac",
        "1",
        "-i",
        "pipe:0",
        "-ar",
        str(sr),
        "-ac",
        str(channels),
        "-c:a",
        "pcm_s16le",
        str(path),
    ]
    subprocess.run(cmd, input=samples.tobytes(), check=True)
    return path


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished children (ffmpeg)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


CPU_RUNS: list[float] = []  # CPU seconds of the runs of the last timed() call


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` runs; their CPU seconds are left in CPU_RUNS."""
    runs = []
    CPU_RUNS.clear()
    for _ in range(repeats):
        start, cpu = time.perf_counter(), cpu_seconds()
        fn()
        runs.append(time.perf_counter() - start)
        CPU_RUNS.append(cpu_seconds() - cpu)
    return runs


def load_model(name: str, threads: int, stub_dir: Path) -> Any:
    from echovids.settings import get_settings

    if name == "yamnet":
        from services.embedder.models.yamnet import YamnetTflite

        return YamnetTflite(get_settings().model_dir, threads=threads)
    if name == "vggish-stub":
        from services.embedder.models.vggish import VggishHub
        from tests.vggish_stub import save_stub

        handle = stub_dir / "vggish-stub"
        if not handle.exists():
            save_stub(handle)
        return VggishHub(str(handle))
    raise ValueError(f"unknown model {name!r}; one of {', '.join(MODELS)}")


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that across fork + exec, so a
    spawned child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _end_to_end_child(name: str, threads: int, stub_dir: str, path: str, streamed: bool, out: Any) -> None:
    from echovids.audio import decode_bytes, decode_stream
    from services.embedder.streaming import embed_stream, embed_waveform

    model = load_model(name, threads, Path(stub_dir))
    base = peak_rss_mb()
    start, cpu = time.perf_counter(), cpu_seconds()
    if streamed:
        result = embed_stream(model, decode_stream(Path(path), chunk_seconds=30.0))
        frames = result.embedded.vectors.shape[0]
    else:
        # What the embedder task does with a clip: the bytes decoded in memory (a WAV in-process), then
        # framed and embedded a block at a time.
        frames = embed_waveform(model, decode_bytes(Path(path).read_bytes())).vectors.shape[0]
    elapsed = time.perf_counter() - start
    out.send((elapsed, frames, peak_rss_mb(), base, cpu_seconds() - cpu))


def end_to_end(
    name: str, threads: int, stub_dir: Path, path: Path, streamed: bool
) -> tuple[float, int, float, float, float]:
    """(seconds, frames, peak RSS MB, RSS MB once the model is loaded, CPU s) in a fresh spawned process."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_end_to_end_child, args=(name, threads, str(stub_dir), str(path), streamed, send))
    child.start()
    elapsed, frames, peak, base, cpu = receive.recv()
    child.join()
    return elapsed, frames, peak, base, cpu


def _cpu() -> float:
    return statistics.median(CPU_RUNS)


JOB_FRAMES = 5  # a 3 s query
JOBS_AT_ONCE = 8


def concurrent_jobs(name: str, model: Any, frames: np.ndarray, repeats: int) -> list[Row]:
    """Many small jobs: one after another (a prefork process), then 8 at a time over one BatchingModel (threads)."""
    from echovids.audio_params import FRAME_HOP_S
    from echovids.settings import get_settings
    from services.embedder.batching import BatchingModel

    settings = get_settings()
    jobs = [frames[i : i + JOB_FRAMES] for i in range(0, min(frames.shape[0], 64 * JOB_FRAMES), JOB_FRAMES)]
    batching = BatchingModel(model, max_frames=settings.embed_batch_frames, max_wait_ms=settings.embed_batch_wait_ms)

    def one_by_one() -> None:
        for job in jobs:
            model.embed(job)

    def together() -> None:
        with ThreadPoolExecutor(JOBS_AT_ONCE) as pool:
            list(pool.map(batching.embed, jobs))

    rows = []
    n = sum(job.shape[0] for job in jobs)
    for label, fn in (("one after another", one_by_one), (f"{JOBS_AT_ONCE} at a time, micro-batched", together)):
        runs = timed(fn, repeats)
        what = f"{name}, {len(jobs)} jobs of {JOB_FRAMES} frames, {label}"
        rows.append(Row("model", what, statistics.median(runs), n * FRAME_HOP_S, n, runs=runs, cpu=_cpu()))
    return rows


def run(config: EmbedBenchConfig, log: Callable[[str], None] = print) -> tuple[list[Row], dict[str, Any]]:
    from echovids.audio import decode_file
    from echovids.framing import frame_waveform
    from tests import melspec

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="echovids-bench-") as tmp:
        folder = Path(tmp)
        log(f"generating {config.seconds:g} s of audio ...")
        wav16 = write_wav(folder / "mono16k.wav", config.seconds, SR, 1)
        wav44 = write_wav(folder / "stereo44k.wav", config.seconds, 44_100, 2)
        waveform = decode_file(wav16)
        audio_s = waveform.size / SR
        for label, path in (("16 kHz mono WAV", wav16), ("44.1 kHz stereo WAV", wav44)):
            runs = timed(lambda p=path: decode_file(p), config.repeats)  # type: ignore[misc]
            rows.append(Row("decode", label, statistics.median(runs), audio_s, runs=runs, cpu=_cpu()))
        frames = frame_waveform(waveform)
        runs = timed(lambda: frame_waveform(waveform), config.repeats)
        rows.append(
            Row("framing", "frame_waveform", statistics.median(runs), audio_s, frames.shape[0], runs=runs, cpu=_cpu())
        )
        runs = timed(lambda: melspec.patches(melspec.log_mel(waveform)), config.repeats)
        rows.append(
            Row(
                "front end",
                "numpy log-mel + [96, 64] patches (0.48 s hop)",
                statistics.median(runs),
                audio_s,
                frames.shape[0],
                runs=runs,
                cpu=_cpu(),
            )
        )
        for name in config.models:
            log(f"{name}: model ...")
            model = load_model(name, config.threads, folder)
            model.embed(frames[:64])  # warm up
            for batch in config.batches:

                def embed_all(model: Any = model, batch: int = batch) -> None:
                    for start in range(0, frames.shape[0], batch):
                        model.embed(frames[start : start + batch])

                runs = timed(embed_all, config.repeats)
                threads = f", {config.threads} interpreters" if name == "yamnet" else ""
                rows.append(
                    Row(
                        "model",
                        f"{name}, batch {batch}{threads}",
                        statistics.median(runs),
                        audio_s,
                        frames.shape[0],
                        runs=runs,
                        cpu=_cpu(),
                    )
                )
            rows += concurrent_jobs(name, model, frames, config.repeats)
            if name == "yamnet" and config.threads > 1:  # what the parallel interpreters buy
                single = load_model(name, 1, folder)
                single.embed(frames[:64])
                batch = max(config.batches)

                def embed_single(batch: int = batch, single: Any = single) -> None:
                    for start in range(0, frames.shape[0], batch):
                        single.embed(frames[start : start + batch])

                runs = timed(embed_single, config.repeats)
                rows.append(
                    Row(
                        "model",
                        f"{name}, batch {batch}, 1 interpreter",
                        statistics.median(runs),
                        audio_s,
                        frames.shape[0],
                        runs=runs,
                        cpu=_cpu(),
                    )
                )
                del single
            log(f"{name}: end to end ...")
            e2e_path = wav16
            e2e_audio = audio_s
            if config.e2e_seconds != config.seconds:
                e2e_path = write_wav(folder / "e2e.wav", config.e2e_seconds, SR, 1)
                e2e_audio = config.e2e_seconds
            for streamed in (True, False):
                results = [end_to_end(name, config.threads, folder, e2e_path, streamed) for _ in range(config.repeats)]
                runs = [r[0] for r in results]
                kind = (
                    "streamed (ffmpeg's output read in 30 s chunks, blocks of 256 frames)"
                    if streamed
                    else "as the embedder task does a clip (decode_bytes: WAV in-process; blocks of 256 frames)"
                )
                base = statistics.median(r[3] for r in results)
                rows.append(
                    Row(
                        "end to end",
                        f"{name}, 16 kHz WAV, {kind}; RSS with the model loaded {base:,.0f} MB",
                        statistics.median(runs),
                        e2e_audio,
                        results[0][1],
                        peak_rss_mb=max(r[2] for r in results),
                        runs=runs,
                        cpu=statistics.median(r[4] for r in results),
                    )
                )
                if name != "yamnet":
                    break  # the whole-file comparison is the same for every model; one is enough
    return rows, machine_info()


def table(rows: list[Row]) -> str:
    lines = [
        "| stage | what | median s | frames/s | x real time | CPU s | x real time per CPU s | peak RSS |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        fps = f"{row.frames_per_s:,.0f}" if row.frames_per_s else ""
        rss = f"{row.peak_rss_mb:,.0f} MB" if row.peak_rss_mb is not None else ""
        cpu = f"{row.cpu:.3f} | {row.audio_s / row.cpu:,.0f}" if row.cpu else " | "
        lines.append(
            f"| {row.stage} | {row.detail} | {row.seconds:.3f} | {fps} | {row.realtime:,.0f} | {cpu} | {rss} |"
        )
    return "\n".join(lines)
