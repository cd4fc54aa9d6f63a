"""/v1/searches: submit a query recording, then poll its job."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status
from fastapi.concurrency import run_in_threadpool

from echovids.errors import InvalidRequest
from echovids.jobs import SETTLED, settle_by
from echovids.pipeline import submit_search
from echovids.schemas import ErrorBody, Job
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
    file: Annotated[UploadFile, File(description="A few seconds of audio (wav, flac, ogg, mp3, m4a, webm)")],
    k: Annotated[int | None, Form(ge=1, description="How many results (at most ECHOVIDS_MAX_K, /v1/config)")] = None,
) -> Job:
    """Queue a search; poll the Location for its status and results."""
    if k is not None and k > settings.max_k:
        raise InvalidRequest(f"k: Input should be less than or equal to {settings.max_k}")
    data = read_audio_upload(file, settings)
    job = submit_search(data, k or settings.default_k, store)
    response.headers["Location"] = f"/v1/searches/{job.id}"
    response.headers["Retry-After"] = "1"
    return job


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
