"""Every error leaves the API as JSON {"code", "message"} with the status its class names."""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from echovids.errors import EchovidsError, ServiceUnavailable

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"code": code, "message": message})


def install(app: FastAPI) -> None:
    @app.exception_handler(EchovidsError)
    async def domain_error(_: Request, exc: EchovidsError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    # Redis down (restarting, or the broker unreachable for a send): a coded 503 the client may retry, not a 500.
    async def backend_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("Redis unavailable: %s: %s", type(exc).__name__, exc)
        error = ServiceUnavailable("The service's queue is unavailable for a moment; try again shortly.")
        return JSONResponse(
            status_code=error.status,
            content={"code": error.code, "message": error.message},
            headers={"Retry-After": "2"},
        )

    for kind in (redis.ConnectionError, redis.TimeoutError, OperationalError):
        app.add_exception_handler(kind, backend_down)

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
