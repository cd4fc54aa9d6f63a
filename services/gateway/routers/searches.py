"""/v1/searches: submit a query recording or a description, then poll its job."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status
from fastapi.concurrency import run_in_threadpool

from echovids.errors import InvalidRequest
from echovids.jobs import SETTLED, settle_by
from echovids.labels import resolve_label
from echovids.pipeline import submit_search, submit_text_search
from echovids.schemas import ErrorBody, Job, SearchFilters
from echovids.settings import Settings
from services.gateway.deps import SettingsDep, StoreDep, read_audio_upload

router = APIRouter(prefix="/v1/searches", tags=["searches"])

# Under the 60 s idle timeout of common proxies and load balancers.
MAX_WAIT_S = 30.0

ERRORS = {
    404: {"model": ErrorBody, "description": "not_found"},
    413: {"model": ErrorBody, "description": "payload_too_large"},
    415: {"model": ErrorBody, "description": "unsupported_media_type"},
    422: {"model": ErrorBody, "description": "validation_error"},
    429: {"model": ErrorBody, "description": "rate_limited (Retry-After says when to try again)"},
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Job,
    responses={k: ERRORS[k] for k in (413, 415, 422, 429)},
)
def create_search(
    response: Response,
    settings: SettingsDep,
    store: StoreDep,
    file: Annotated[
        UploadFile | None, File(description="A few seconds of audio (wav, flac, ogg, mp3, m4a, webm); or send text")
    ] = None,
    text: Annotated[
        str | None,
        Form(description='A description of the sound ("rain on a tin roof"), at most ECHOVIDS_MAX_TEXT_CHARS; or file'),
    ] = None,
    k: Annotated[int | None, Form(ge=1, description="How many results (at most ECHOVIDS_MAX_K, /v1/config)")] = None,
    labels: Annotated[
        list[str] | None,
        Form(description="Only results whose matched moment holds one of these AudioSet classes (names or /m/ ids)"),
    ] = None,
    source: Annotated[Literal["youtube", "file"] | None, Form(description="Only clips of this source")] = None,
    min_duration_s: Annotated[float | None, Form(ge=0, description="Only clips at least this long")] = None,
    max_duration_s: Annotated[float | None, Form(ge=0, description="Only clips at most this long")] = None,
) -> Job:
    """Queue a search by example (``file``) or by description (``text``); poll the Location for its results."""
    if k is not None and k > settings.max_k:
        raise InvalidRequest(f"k: Input should be less than or equal to {settings.max_k}")
    if (file is None) == (text is None):
        raise InvalidRequest("Send either a recording (file) or a description (text), not both and not neither.")
    filters = _filters(labels, source, min_duration_s, max_duration_s)
    if text is not None:
        job = submit_text_search(_checked_text(text, settings), k or settings.default_k, store, filters)
    else:
        assert file is not None
        job = submit_search(read_audio_upload(file, settings), k or settings.default_k, store, filters)
    response.headers["Location"] = f"/v1/searches/{job.id}"
    response.headers["Retry-After"] = "1"
    return job


def _checked_text(text: str, settings: Settings) -> str:
    text = " ".join(text.split())
    if not text:
        raise InvalidRequest("text: the description is empty.")
    if len(text) > settings.max_text_chars:
        raise InvalidRequest(f"text: at most {settings.max_text_chars} characters, not {len(text)}.")
    return text


def _filters(
    labels: list[str] | None, source: str | None, min_duration_s: float | None, max_duration_s: float | None
) -> SearchFilters | None:
    """The search's filters, labels as AudioSet class names; None when there are none."""
    wanted = [label.strip() for label in labels or [] if label.strip()]
    names = [resolve_label(label) for label in wanted]
    unknown = [label for label, name in zip(wanted, names) if name is None]
    if unknown:
        raise InvalidRequest(f"labels: not AudioSet classes: {', '.join(unknown)} (names or /m/ ids)")
    if min_duration_s is not None and max_duration_s is not None and min_duration_s > max_duration_s:
        raise InvalidRequest("min_duration_s is above max_duration_s.")
    if not names and source is None and min_duration_s is None and max_duration_s is None:
        return None
    return SearchFilters(
        labels=[n for n in names if n is not None],
        source=source,  # type: ignore[arg-type]  # Literal checked by FastAPI
        min_duration_s=min_duration_s,
        max_duration_s=max_duration_s,
    )


@router.get("/{job_id}", response_model=Job, responses={404: ERRORS[404]})
async def get_search(
    job_id: str,
    store: StoreDep,
    response: Response,
    wait: Annotated[
        float,
        Query(
            ge=0, le=MAX_WAIT_S, description="Hold the answer up to this many seconds until the job is done or failed"
        ),
    ] = 0.0,
) -> Job:
    """The job record: status, and the results once done. With ``wait``, a long poll: one request, no polling loop.

    A search past its deadline (ECHOVIDS_SEARCH_TIMEOUT_S after its embedding, ECHOVIDS_SEARCH_TOTAL_TIMEOUT_S
    after submission) is ended here as `search_unavailable`: whatever its workers do, even the merge worker that
    normally ends it, the answer comes on time.
    """
    # Truly async: the long poll awaits Redis pub/sub on the event loop; the blocking reads go to the thread pool.
    if wait > 0:
        job = await store.wait_settled(job_id, wait, due=settle_by)
    else:
        job = await run_in_threadpool(store.get, job_id)
    if job.status not in SETTLED:
        job = await run_in_threadpool(store.end_if_overdue, job)
    if job.status not in SETTLED:
        response.headers["Retry-After"] = "1"
    return job
