"""Dependencies shared by the routers (FastAPI's Annotated aliases)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Header, UploadFile

from echovids.audio import looks_like_non_audio
from echovids.errors import EchovidsError, Forbidden, PayloadTooLarge, Unauthorized, UnsupportedMediaType
from echovids.jobs import JobStore
from echovids.settings import Settings, get_settings

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_store() -> JobStore:
    return JobStore()


StoreDep = Annotated[JobStore, Depends(get_store)]

# Types a browser or curl may send for audio; anything else that is plainly text, image or a document is refused.
_AUDIO_PREFIXES = ("audio/", "video/")
_AUDIO_EXACT = {"application/octet-stream", "application/ogg", "application/x-www-form-urlencoded", ""}


def read_audio_upload(file: UploadFile, settings: Settings) -> bytes:
    """Read an uploaded file, refusing what is too large or plainly not audio.

    Called from plain `def` handlers (FastAPI's thread pool): the form is parsed already, so this reads the spooled
    file synchronously and never on the event loop.
    """
    limit = int(settings.max_upload_mb * 1024 * 1024)
    file.file.seek(0)
    data = file.file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"The upload is larger than {settings.max_upload_mb:g} MB.")
    media_type = (file.content_type or "").split(";")[0].strip().lower()
    if not (media_type.startswith(_AUDIO_PREFIXES) or media_type in _AUDIO_EXACT) or looks_like_non_audio(data[:64]):
        raise UnsupportedMediaType(
            f"{file.filename or 'The upload'} ({media_type or 'no type'}) is not audio; "
            "send wav, flac, ogg, mp3, m4a or webm."
        )
    return data


def api_key_error(authorization: str | None, settings: Settings) -> EchovidsError | None:
    """Why a library write with this Authorization header is refused (401 / 403), or None when it may go on."""
    if not settings.api_key:
        return None
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return Unauthorized("This endpoint needs `Authorization: Bearer <API key>`.")
    if not secrets.compare_digest(token.strip().encode(), settings.api_key.encode()):
        return Forbidden("The API key is not valid.")
    return None


def require_api_key(
    settings: SettingsDep,
    authorization: Annotated[str | None, Header(description="Bearer <ECHOVIDS_API_KEY>")] = None,
) -> None:
    """Library writes: with ECHOVIDS_API_KEY set, `Authorization: Bearer <key>` is required (401 / 403).

    The gateway's guard (services/gateway/guard.py) refuses such a request from its headers already, before its
    body is read; this dependency documents the header in the API's schema and holds for any route mounted
    without the guard.
    """
    error = api_key_error(authorization, settings)
    if error is not None:
        raise error


WriteAccess = Annotated[None, Depends(require_api_key)]
