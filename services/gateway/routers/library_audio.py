"""GET /v1/library/{clip_id}/audio: the stored audio of a library clip (the web page plays it, draws its waveform)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from echovids import catalog, clip_audio
from echovids.errors import NotFound
from echovids.schemas import ErrorBody

router = APIRouter(prefix="/v1/library", tags=["library"])


@router.get(
    "/{clip_id}/audio",
    response_class=FileResponse,
    responses={
        200: {"content": {"audio/*": {}}, "description": "The clip's audio as uploaded (byte ranges supported)"},
        404: {"model": ErrorBody, "description": "not_found"},
    },
)
def get_clip_audio(clip_id: str) -> FileResponse:
    """The clip's audio as it was uploaded, with its media type; 404 when the clip or its audio is unknown."""
    path = clip_audio.find(clip_id)
    if path is None or clip_id not in catalog.get_clips([clip_id]):
        raise NotFound(f"No stored audio for clip {clip_id!r}.")
    return FileResponse(path, media_type=clip_audio.media_type(path), filename=None)
