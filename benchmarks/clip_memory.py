"""Peak memory of one library clip's ingest by its length: the embedder's decode -> frames -> embeddings ->
landmarks (``services.embedder.tasks.embed_upload``) on pink noise encoded as Opus, each in a fresh process.

Noise is the worst case for the landmarks (every second fills its quota of peaks) and Opus the case of the issue
that asked for this: a small file (12 kbit/s: 13 MB for 3 h) that decodes to hours.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from echovids.audio import ffmpeg_exe
from echovids.harness import ROOT


def write_noise(path: Path, seconds: float) -> Path:
    noise = f"anoisesrc=d={seconds}:c=pink:r=16000:a=0.3"
    encode = ["-ac", "1", "-c:a", "libopus", "-b:a", "12k", str(path)]
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", noise, *encode], check=True)
    return path


def measure(path: Path) -> dict[str, Any]:
    """Run the ingest of ``path`` in a fresh process; its peak RSS before and after the clip, frames, time."""
    child = subprocess.run(
        [sys.executable, "-m", "benchmarks.clip_memory", str(path)], cwd=ROOT, capture_output=True, text=True
    )
    if child.returncode != 0:
        raise RuntimeError(child.stderr[-2000:])
    return dict(json.loads(child.stdout.strip().splitlines()[-1]))


def run(minutes: list[float], workdir: Path | None = None) -> list[dict[str, Any]]:
    root = Path(workdir or tempfile.mkdtemp(prefix="echovids-clip-memory-"))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for length in minutes:
        path = root / f"noise-{length:g}min.ogg"
        if not path.exists():
            write_noise(path, length * 60)
        rows.append({"minutes": length, "file_mb": round(path.stat().st_size / 2**20, 1), **measure(path)})
    return rows


def _child(path: Path) -> None:
    import numpy as np

    from services.embedder.factory import get_model
    from services.embedder.tasks import embed_upload

    data = path.read_bytes()
    model = get_model()
    model.embed(np.zeros((1, 15_600), np.float32))  # the model's own memory counted apart from the clip's
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.monotonic()
    clip = embed_upload(model, data)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "frames": clip.n_frames,
                "model_loaded_rss_mb": round(loaded),
                "peak_rss_mb": round(peak),
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
