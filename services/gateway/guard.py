"""The gateway's door: a pure ASGI middleware that refuses a request from its headers, before its body is read.

FastAPI parses (and spools to disk) a whole multipart body before any dependency runs, so a check in a route
comes too late for a 10 GB upload or a keyless one. Here, in front of the parsing:
- library writes without a valid API key: 401 / 403 at once;
- a declared Content-Length over the route's limit: 413 at once; a chunked (or lying) body: 413 the moment
  what arrived passes the limit;
- a body that has not arrived within ECHOVIDS_BODY_TIMEOUT_S (a slow-loris upload): 408;
- past the client's rate of searches or library writes: 429 with Retry-After (a token bucket in Redis, shared
  by every gateway process);
- an unsafe request from a browser page of another origin than the gateway's own or ECHOVIDS_CORS_ORIGINS: 403.
Every refusal is the API's JSON error body; a refusal of a body still arriving closes the connection.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from echovids.errors import (
    EchovidsError,
    Forbidden,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
)
from echovids.redis_conn import get_redis
from echovids.settings import Settings, get_settings
from services.gateway import ratelimit
from services.gateway.deps import api_key_error
from services.gateway.errors import backend_unavailable, domain_response

MB = 1024 * 1024
# Multipart framing and the small form fields (k, title, labels) on top of the file itself.
FORM_OVERHEAD = 64 * 1024
# No other route takes a body of any size.
OTHER_BODY_LIMIT = 64 * 1024
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass(frozen=True)
class Rule:
    body_limit: int
    rate: str | None = None  # which bucket: "searches" or "writes"
    needs_key: bool = False


def rule_for(method: str, path: str, settings: Settings) -> Rule:
    path = path.rstrip("/")
    if method == "POST" and path == "/v1/searches":
        return Rule(int(settings.max_upload_mb * MB) + FORM_OVERHEAD, rate="searches")
    if method == "POST" and path == "/v1/library":
        return Rule(int(settings.max_request_mb * MB) + FORM_OVERHEAD, rate="writes", needs_key=True)
    if method == "DELETE" and path.startswith("/v1/library/"):
        return Rule(OTHER_BODY_LIMIT, rate="writes", needs_key=True)
    return Rule(OTHER_BODY_LIMIT)


def cors_origins(settings: Settings) -> list[str]:
    return [o.strip().rstrip("/") for o in settings.cors_origins.split(",") if o.strip()]


def _rate(settings: Settings, kind: str) -> tuple[float, int]:
    if kind == "searches":
        return settings.rate_limit_searches_per_s, settings.rate_limit_searches_burst
    return settings.rate_limit_writes_per_s, settings.rate_limit_writes_burst


def refusal(error: EchovidsError, close: bool = False) -> JSONResponse:
    headers = {"Connection": "close"} if close else {}
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return domain_response(error, headers)


def header_error(scope: Scope, rule: Rule, headers: Headers, settings: Settings) -> EchovidsError | None:
    """What the headers alone refuse, or None."""
    origin = headers.get("origin")
    if scope["method"] in UNSAFE_METHODS and origin and origin != "null":
        # A browser names the page's origin; the gateway's own page has the gateway's host.
        own = urlsplit(origin).netloc == headers.get("host", "")
        if not own and origin.rstrip("/") not in cors_origins(settings):
            return Forbidden(f"Requests from {origin} are not allowed (ECHOVIDS_CORS_ORIGINS).")
    if rule.needs_key and (error := api_key_error(headers.get("authorization"), settings)) is not None:
        return error
    length = headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > rule.body_limit):
        return PayloadTooLarge(f"The request is larger than {rule.body_limit / MB:.3g} MB.")
    return None


def client_of(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def rate_error(scope: Scope, rule: Rule, settings: Settings) -> EchovidsError | None:
    """Take one request from the client's bucket (blocking: call in a thread); RateLimited when empty."""
    if rule.rate is None:
        return None
    rate, burst = _rate(settings, rule.rate)
    if rate <= 0:
        return None
    wait_s = ratelimit.take(get_redis(), ratelimit.bucket_key(rule.rate, client_of(scope)), rate, burst)
    if wait_s <= 0:
        return None
    return RateLimited(
        f"Too many {rule.rate} from this client (at most {rate:g}/s, bursts of {burst}); try again shortly.",
        retry_after_s=wait_s,
    )


class _Refused(Exception):
    """Raised into the app from receive(): its body will not be read further."""


class GuardedBody:
    """The app's receive(): the body's bytes are counted against the limit and must arrive before the deadline."""

    def __init__(self, receive: Receive, limit: int, timeout_s: float) -> None:
        self.receive = receive
        self.limit = limit
        self.timeout_s = timeout_s
        self.deadline = asyncio.get_running_loop().time() + timeout_s
        self.received = 0
        self.complete = False
        self.error: EchovidsError | None = None

    async def __call__(self) -> Message:
        if self.complete or self.error is not None:
            # After the body, receive() only waits for a disconnect (a long poll, a streamed answer): no deadline.
            return await self.receive()
        left = self.deadline - asyncio.get_running_loop().time()
        try:
            message = await asyncio.wait_for(self.receive(), timeout=max(left, 0.0))
        except TimeoutError:
            self.error = RequestTimeout(f"The request body did not arrive within {self.timeout_s:g} s.")
            raise _Refused from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.error = PayloadTooLarge(f"The request is larger than {self.limit / MB:.3g} MB.")
                raise _Refused
            self.complete = not message.get("more_body", False)
        else:
            self.complete = True  # http.disconnect
        return message


class RequestGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = get_settings()
        rule = rule_for(scope["method"], scope["path"], settings)
        headers = Headers(scope=scope)
        error = header_error(scope, rule, headers, settings)
        if error is None:
            try:
                error = await run_in_threadpool(rate_error, scope, rule, settings)
            except redis.RedisError as exc:
                error = backend_unavailable(exc)
        if error is not None:
            # Connection: close when a body may follow that nobody will read.
            has_body = "content-length" in headers or "transfer-encoding" in headers
            await refusal(error, close=has_body)(scope, receive, send)
            return
        body = GuardedBody(receive, rule.body_limit, settings.body_timeout_s)
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if body.error is not None:
                return  # the app's answer to a body cut short (a parse error) gives way to the refusal
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, body, guarded_send)
        except Exception:
            if body.error is None:
                raise
        if body.error is not None and not started:
            await refusal(body.error, close=True)(scope, _no_body, send)


async def _no_body() -> dict[str, Any]:
    return {"type": "http.disconnect"}
