"""Library throughput: `echovids ingest` of a folder of generated files (hours of audio per minute of wall time),
and `echovids import-audioset` of generated TFRecords in the released format (records per second).

Each run starts its own `echovids serve` (fresh data dir; embedded Redis unless --redis-url) and times the CLI
exactly as a user runs it, through the real queues and workers.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SR = 16_000


def write_wav(path: Path, x: np.ndarray) -> None:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    def __init__(self, data_dir: Path, redis_url: str | None) -> None:
        # Tuning settings (ECHOVIDS_EMBEDDER_PROCESSES, ...) pass through; where the deployment lives does not.
        own = {"ECHOVIDS_DATA_DIR", "ECHOVIDS_PORT", "ECHOVIDS_REDIS_URL", "ECHOVIDS_DATABASE_URL"}
        self.env = {k: v for k, v in os.environ.items() if k not in own}
        self.env.update(
            ECHOVIDS_DATA_DIR=str(data_dir),
            ECHOVIDS_PORT=str(free_port()),
            TF_CPP_MIN_LOG_LEVEL="2",
            ECHOVIDS_MODEL_DIR=os.environ.get("ECHOVIDS_MODEL_DIR", str(ROOT.parent / "shared" / "models")),
        )
        if redis_url:
            self.env["ECHOVIDS_REDIS_URL"] = redis_url
        self.log = (data_dir.parent / "serve.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "echovids.cli", "serve"],
            env=self.env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        import httpx

        deadline = time.monotonic() + 120
        url = f"http://127.0.0.1:{self.env['ECHOVIDS_PORT']}/readyz"
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=3).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("echovids serve did not get ready")

    def cli(self, *args: str) -> tuple[float, str]:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "echovids.cli", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.monotonic() - started
        if done.returncode != 0:
            raise RuntimeError(f"echovids {args[0]} failed: {done.stdout}\n{done.stderr[-3000:]}")
        return wall, done.stdout

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


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
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    model = ""
    with contextlib.suppress(OSError, StopIteration):
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return f"{len(cpus)} CPU cores ({model or platform.processor()}), Python {platform.python_version()}"


def run(
    files: int = 24, seconds: float = 150.0, records: int = 2000, redis_url: str | None = None, keep: bool = False
) -> dict[str, float | str]:
    workdir = Path(tempfile.mkdtemp(prefix="echovids-bench-ingest-"))
    out: dict[str, float | str] = {"machine": machine()}
    try:
        audio_s = generate_folder(workdir / "audio", files, seconds)
        serve = Serve(workdir / "data", redis_url)
        try:
            wall, stdout = serve.cli("ingest", str(workdir / "audio"), "--window", "16")
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
            serve = Serve(workdir / "data-audioset", redis_url)
            try:
                wall, stdout = serve.cli(
                    "import-audioset", "--segments", str(csv_path), "--features", str(workdir / "audioset")
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
