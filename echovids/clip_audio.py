"""A durable copy of each library clip's uploaded audio, so the web page can play it and draw its waveform.

Files live at ``ECHOVIDS_DATA_DIR/audio/<clip_id><suffix>``; the suffix comes from the uploaded file name, or
from the bytes' magic number when the name says nothing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from echovids.settings import get_settings

MEDIA_TYPES = {
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".mp4": "audio/mp4",
    ".aac": "audio/aac",
    ".webm": "audio/webm",
    ".aif": "audio/aiff",
    ".aiff": "audio/aiff",
}

_CLIP_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def audio_dir() -> Path:
    return get_settings().data_dir / "audio"


def sniff_suffix(data: bytes) -> str:
    """A file suffix from the leading bytes ('' when unknown)."""
    head = data[:16]
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return ".wav"
    if head.startswith(b"fLaC"):
        return ".flac"
    if head.startswith(b"OggS"):
        return ".ogg"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return ".mp3"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return ".webm"
    if head[4:8] == b"ftyp":
        return ".m4a"
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return ".aiff"
    return ""


def save(clip_id: str, data: bytes, file_name: str | None = None) -> Path:
    """Write the clip's bytes durably (temp file + rename, so a reader never sees half a file)."""
    suffix = Path(file_name).suffix.lower() if file_name else ""
    if suffix not in MEDIA_TYPES:
        suffix = sniff_suffix(data) or ".bin"
    folder = audio_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{clip_id}{suffix}"
    tmp = folder / f".{clip_id}{suffix}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def find(clip_id: str) -> Path | None:
    """The stored audio of a clip, or None (unknown id, or stored before audio was kept)."""
    if not _CLIP_ID.match(clip_id):
        return None
    # A stat per known suffix, not a listing: the folder holds every clip of the library.
    folder = audio_dir()
    for suffix in (*MEDIA_TYPES, ".bin"):
        path = folder / f"{clip_id}{suffix}"
        if path.is_file():
            return path
    return None


def delete(clip_id: str) -> bool:
    """Remove a clip's stored audio (for the library's DELETE); True when a file was removed."""
    path = find(clip_id)
    if path is None:
        return False
    path.unlink(missing_ok=True)
    return True


def media_type(path: Path) -> str:
    return MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
