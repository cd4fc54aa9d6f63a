"""Library throughput: `echovids ingest` of a folder of generated files (hours of audio per minute of wall time),
and `echovids import-audioset` of generated TFRecords in the released format (records per second).

Each run starts its own `echovids serve` (fresh data dir; embedded Redis unless --redis-url) and times the CLI
exactly as a user runs it, through the real queues and workers.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from echovids.harness import Stack, machine_info, make_stack, write_wav

SR = 16_000


def generate_folder(folder: Path, files: int, seconds: float, seed: int = 0) -> float:
    """Distinct files: tones that wander over band-limited noise. Returns the total audio seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    for i in range(files):
        f = rng.uniform(200, 3000) * (1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t))
        tone = 0.3 * np.sin(2 * np.pi * np.cumsum(f) / SR)
        write_wav(folder / f"bench_{i:04d}.wav", tone + 0.05 * rng.standard_normal(t.size))
    return files * seconds


def start_stack(data_dir: Path, redis_url: str | None) -> Stack:
    """`echovids serve` on a fresh data dir; tuning settings (ECHOVIDS_EMBEDDER_PROCESSES, ...) pass through."""
    stack = make_stack(data_dir, redis_url, keep_settings=True)
    stack.log_path = data_dir.parent / "serve.log"
    stack.start(timeout=120)
    return stack


def timed_cli(stack: Stack, *args: str) -> tuple[float, str]:
    """Run `echovids ARGS` against the stack as a user would: (wall seconds, stdout); raises if it fails."""
    started = time.monotonic()
    done = stack.cli(*args, timeout=None)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"echovids {args[0]} failed: {done.stdout}\n{done.stderr[-3000:]}")
    return wall, done.stdout


def write_audioset(folder: Path, records: int, seconds: int = 10) -> Path:
    """A segment CSV and TFRecords in AudioSet's released format (written with TensorFlow's writer)."""
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
    lines = ["# YTID, start_seconds, end_seconds, positive_labels"]
    per_file = 1000
    for f in range(0, records, per_file):
        with tf.io.TFRecordWriter(str(folder / f"{f // per_file:03d}.tfrecord")) as w:
            for _ in range(min(per_file, records - f)):
                ytid = "".join(rng.choice(alphabet, 11))
                ex = tf.train.SequenceExample()
                ex.context.feature["video_id"].bytes_list.value.append(ytid.encode())
                ex.context.feature["start_time_seconds"].float_list.value.append(30.0)
                ex.context.feature["end_time_seconds"].float_list.value.append(30.0 + seconds)
                ex.context.feature["labels"].int64_list.value.extend([0, 74])
                fl = ex.feature_lists.feature_list["audio_embedding"]
                for row in rng.integers(0, 256, size=(seconds, 128), dtype=np.uint8):
                    fl.feature.add().bytes_list.value.append(row.tobytes())
                w.write(ex.SerializeToString())
                lines.append(f'{ytid}, 30.000, {30 + seconds:.3f}, "/m/09x0r,/m/0bt9lr"')
    csv_path = folder / "segments.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    return csv_path


def machine() -> str:
    m = machine_info()
    return f"{m['nproc']} CPU cores ({m['cpu']}), Python {m['python']}"


def run(
    files: int = 24, seconds: float = 150.0, records: int = 2000, redis_url: str | None = None, keep: bool = False
) -> dict[str, float | str]:
    workdir = Path(tempfile.mkdtemp(prefix="echovids-bench-ingest-"))
    out: dict[str, float | str] = {"machine": machine()}
    try:
        audio_s = generate_folder(workdir / "audio", files, seconds)
        serve = start_stack(workdir / "data", redis_url)
        try:
            wall, stdout = timed_cli(serve, "ingest", str(workdir / "audio"), "--window", "16")
            out.update(
                files=files,
                audio_h=audio_s / 3600,
                ingest_wall_s=wall,
                ingest_h_per_min=audio_s / 3600 / (wall / 60),
                ingest_summary=stdout.strip(),
            )
        finally:
            serve.stop()
        if records:
            csv_path = write_audioset(workdir / "audioset", records)
            serve = start_stack(workdir / "data-audioset", redis_url)
            try:
                wall, stdout = timed_cli(
                    serve, "import-audioset", "--segments", str(csv_path), "--features", str(workdir / "audioset")
                )
                sent = re.search(r"\(([\d.]+) records/s\)", stdout)
                out.update(
                    records=records,
                    import_wall_s=wall,
                    import_records_per_s=records / wall,
                    import_send_records_per_s=float(sent.group(1)) if sent else 0.0,
                    import_summary=stdout.strip(),
                )
            finally:
                serve.stop()
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return out
