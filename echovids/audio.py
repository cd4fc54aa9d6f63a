"""Audio decoding, in one place: any format ffmpeg reads, to 16 kHz mono float32 in [-1, 1]."""

from __future__ import annotations

import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from echovids.errors import AudioTooLong, UndecodableAudio

SAMPLE_RATE = 16_000

# Leading bytes of common files that are plainly not audio: rejected before any queueing.
_NOT_AUDIO_MAGIC = (
    b"\x89PNG",
    b"\xff\xd8\xff",  # JPEG
    b"GIF8",
    b"%PDF",
    b"PK\x03\x04",  # zip, docx, xlsx
    b"\x7fELF",
    b"<!DOCTYPE",
    b"<html",
    b"{",
)


@lru_cache
def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def looks_like_non_audio(head: bytes) -> bool:
    """True for bytes whose magic number says image, document, archive or text markup."""
    stripped = head.lstrip()
    return any(stripped.startswith(magic) for magic in _NOT_AUDIO_MAGIC)


def decode_file(path: Path, max_seconds: float | None = None) -> np.ndarray:
    """Decode an audio file to 16 kHz mono float32; raises UndecodableAudio or AudioTooLong."""
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path)]
    if max_seconds is not None:
        # Decode one second past the limit: enough to know it is too long, bounded memory.
        cmd += ["-t", f"{max_seconds + 1.0:.3f}"]
    cmd += ["-vn", "-f", "f32le", "-acodec", "pcm_f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "pipe:1"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        reason = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = reason[-1] if reason else "no audio stream"
        raise UndecodableAudio(f"The file could not be decoded as audio ({detail}).")
    samples = np.frombuffer(proc.stdout[: len(proc.stdout) // 4 * 4], dtype=np.float32)
    if max_seconds is not None and samples.size > max_seconds * SAMPLE_RATE:
        raise AudioTooLong(f"The audio is longer than the limit of {max_seconds:g} s.")
    # Float WAVs may carry NaN/inf or overs; the model expects finite values in [-1, 1].
    return np.clip(np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)


def decode_bytes(data: bytes, max_seconds: float | None = None) -> np.ndarray:
    """Decode in-memory audio; a temp file (not a pipe) lets ffmpeg seek, which MP4/M4A need."""
    if not data:
        raise UndecodableAudio("The file is empty.")
    with tempfile.NamedTemporaryFile(suffix=".bin") as tmp:
        tmp.write(data)
        tmp.flush()
        return decode_file(Path(tmp.name), max_seconds=max_seconds)
