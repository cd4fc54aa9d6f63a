"""Liveness and readiness."""

from __future__ import annotations

import time

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from echovids import queues, warm_shards
from echovids.celery_app import get_celery
from echovids.redis_conn import get_redis
from echovids.settings import get_settings

router = APIRouter(tags=["health"])

_cache: dict[str, tuple[float, set[str]]] = {}


def consumed_queues(required: set[str], ttl_s: float = 2.0) -> set[str]:
    """Queues with at least one live worker consuming them (a Celery broadcast, which waits out its timeout).
    An answer that has every ``required`` queue is kept briefly; one that lacks some is not, so a stack coming up
    is seen ready at the next look rather than a cache's lifetime later."""
    cached = _cache.get("queues")
    if cached and time.monotonic() - cached[0] < ttl_s:
        return cached[1]
    replies = get_celery().control.inspect(timeout=1.0).active_queues() or {}
    names = {q["name"] for worker_queues in replies.values() for q in worker_queues}
    if required <= names:
        _cache["queues"] = (time.monotonic(), names)
    return names


def required_queues() -> dict[str, list[str]]:
    shards = [queues.shard_queue(i) for i in range(get_settings().search_shards)]
    return {
        "embedder": [queues.EMBED],
        "search": [queues.SEARCH_MERGE, *shards],
        "availability": [queues.AVAILABILITY],
    }


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz() -> JSONResponse:
    """Redis answers, every worker kind has a live consumer on each of its queues and every shard is loaded in
    some live search process."""
    try:
        get_redis().ping()
        warm = warm_shards.warm()
    except redis.RedisError as exc:
        return JSONResponse(status_code=503, content={"status": "unready", "redis": f"unreachable: {exc}"})
    required = required_queues()
    live = consumed_queues({q for qs in required.values() for q in qs})
    missing = {svc: [q for q in qs if q not in live] for svc, qs in required.items()}
    missing = {svc: qs for svc, qs in missing.items() if qs}
    cold = [shard for shard in range(get_settings().search_shards) if shard not in warm]
    ready = not missing and not cold
    body = {"status": "ready" if ready else "unready", "redis": "ok", "missing_consumers": missing, "cold_shards": cold}
    return JSONResponse(status_code=200 if ready else 503, content=body)
