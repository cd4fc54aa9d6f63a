"""/v1/library: add audio to the library (202 + a job per file), list it, read one clip, delete one.

Writes need `Authorization: Bearer <ECHOVIDS_API_KEY>` when the key is set; reads are open.
(GET /v1/library/{clip_id}/audio lives in routers/library_audio.py.)
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile, status

from echovids import library
from echovids.errors import PayloadTooLarge, UnsupportedMediaType
from echovids.labels import check_metadata
from echovids.library import LibraryClip, LibraryPage
from echovids.schemas import ClipStatus, ErrorBody, Job
from services.gateway.deps import SettingsDep, StoreDep, WriteAccess, read_audio_upload

router = APIRouter(prefix="/v1/library", tags=["library"])

MAX_FILES = 32
STATUS_PATTERN = f"^({'|'.join(ClipStatus)})$"

ERRORS = {
    401: {"model": ErrorBody, "description": "unauthorized: no `Authorization: Bearer` key"},
    403: {"model": ErrorBody, "description": "forbidden: the key is wrong"},
    404: {"model": ErrorBody, "description": "not_found"},
    413: {"model": ErrorBody, "description": "payload_too_large"},
    415: {"model": ErrorBody, "description": "unsupported_media_type"},
    422: {"model": ErrorBody, "description": "validation_error"},
    429: {"model": ErrorBody, "description": "rate_limited (Retry-After says when to try again)"},
}


def split_labels(values: list[str] | None) -> list[str]:
    """Labels from a comma-separated field, a repeated field, or both; blanks and repeats dropped."""
    out: list[str] = []
    for value in values or []:
        for label in value.split(","):
            label = label.strip()
            if label and label not in out:
                out.append(label)
    return out


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=list[Job],
    responses={k: ERRORS[k] for k in (401, 403, 413, 415, 422, 429)},
)
def add_clips(
    request: Request,
    response: Response,
    _auth: WriteAccess,
    settings: SettingsDep,
    store: StoreDep,
    file: Annotated[list[UploadFile], File(description="One or more audio files (repeat the `file` field)")],
    title: Annotated[
        str | None, Form(description="Title (one file; ECHOVIDS_MAX_TITLE_LENGTH); default the file name")
    ] = None,
    labels: Annotated[
        list[str] | None,
        Form(description="Labels, comma-separated (or the field repeated); ECHOVIDS_MAX_LABELS, _MAX_LABEL_LENGTH"),
    ] = None,
) -> list[Job]:
    """Queue each file for embedding and indexing: one job per file, in the order sent. A file whose exact bytes
    are in the library already gets a job that is done at once (its `clip_id` is the clip that has them)."""
    length = request.headers.get("content-length")
    limit_mb = settings.max_upload_mb * min(len(file), MAX_FILES)
    if length and length.isdigit() and int(length) > limit_mb * 1024 * 1024 + 64 * 1024 * len(file):
        raise PayloadTooLarge(f"The upload is larger than {settings.max_upload_mb:g} MB per file.")
    if len(file) > MAX_FILES:
        raise PayloadTooLarge(f"At most {MAX_FILES} files per request.")
    label_list = split_labels(labels)
    check_metadata(title, label_list)
    # Every file is read and checked before any is queued: a bad file refuses the request as a whole.
    datas = [read_audio_upload(f, settings) for f in file]
    if not all(datas):
        raise UnsupportedMediaType("An uploaded file is empty.")
    jobs = []
    for upload, data in zip(file, datas, strict=True):
        name = upload.filename or None
        clip_title = title if title and len(file) == 1 else (name.rsplit(".", 1)[0] if name else "untitled")
        clip_title = clip_title[: settings.max_title_length]  # a file name of any length is no title error
        jobs.append(library.submit_once(data, clip_title, file_name=name, labels=label_list, store=store).job)
    if jobs and jobs[0].clip_id:
        response.headers["Location"] = f"/v1/library/{jobs[0].clip_id}"
    response.headers["Retry-After"] = "1"
    return jobs


@router.get("", response_model=LibraryPage, responses={422: ERRORS[422]})
def list_clips(
    page: Annotated[int, Query(ge=1, le=1_000_000_000)] = 1,  # an offset SQL can hold; past the end is empty
    page_size: Annotated[int, Query(ge=1, le=200)] = 50,
    label: Annotated[str | None, Query(description="An exact label: a name, or an AudioSet id")] = None,
    q: Annotated[str | None, Query(max_length=200, description="Text in the title or file name")] = None,
    clip_status: Annotated[str | None, Query(alias="status", pattern=STATUS_PATTERN)] = None,
) -> LibraryPage:
    """The library's clips, newest first, a page at a time."""
    return library.list_clips(page=page, page_size=page_size, label=label, q=q, status=clip_status)


@router.get("/{clip_id}", response_model=LibraryClip, responses={404: ERRORS[404]})
def get_clip(clip_id: str, store: StoreDep) -> LibraryClip:
    """One clip: its metadata and status (and why it failed, while its job is known)."""
    return library.get_item(clip_id, store)


@router.delete("/{clip_id}", status_code=status.HTTP_204_NO_CONTENT, responses={k: ERRORS[k] for k in (401, 403, 404)})
def delete_clip(clip_id: str, _auth: WriteAccess, store: StoreDep) -> Response:
    """Remove the clip from the catalog and tombstone its frames: it stops matching at once."""
    library.delete_clip(clip_id, store)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
