"""Every error leaves the API as JSON {"code", "message"} with the status its class names."""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from echovids.errors import EchovidsError, RateLimited, ServiceUnavailable
from services.gateway.ratelimit import retry_after

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"code": code, "message": message}, headers=headers)


def domain_response(error: EchovidsError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The error's JSON, with Retry-After where it says when to come back."""
    headers = dict(headers or {})
    if isinstance(error, RateLimited | ServiceUnavailable):
        headers["Retry-After"] = retry_after(error.retry_after_s)
    return error_response(error.status, error.code, error.message, headers)


def backend_unavailable(exc: redis.RedisError | OperationalError) -> ServiceUnavailable:
    """Redis down (restarting, or the broker unreachable for a send) or full: a coded 503, not a 500."""
    log.warning("Redis unavailable: %s: %s", type(exc).__name__, exc)
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        # At its maxmemory Redis refuses writes (noeviction: queued tasks are never dropped to make room); the
        # queued work drains and settled jobs free their uploads, so it is a wait, not a fault of the request.
        return ServiceUnavailable("The service's queue is full; try again in a little while.", retry_after_s=30)
    return ServiceUnavailable("The service's queue is unavailable for a moment; try again shortly.")


def install(app: FastAPI) -> None:
    @app.exception_handler(EchovidsError)
    async def domain_error(_: Request, exc: EchovidsError) -> JSONResponse:
        return domain_response(exc)

    async def backend_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, redis.RedisError | OperationalError)
        return domain_response(backend_unavailable(exc))

    for kind in (redis.ConnectionError, redis.TimeoutError, redis.exceptions.OutOfMemoryError, OperationalError):
        app.add_exception_handler(kind, backend_error)

    # Anything unforeseen still leaves as the API's JSON, without a traceback or a path (the server logs those).
    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        return error_response(500, EchovidsError.code, "Something went wrong on our side; the error is logged.")

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return error_response(422, "validation_error", "; ".join(parts) or "The request is not valid.")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))
