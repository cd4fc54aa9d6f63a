"""Liveness and readiness."""

from __future__ import annotations

import time

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from echovids import queues
from echovids.celery_app import get_celery
from echovids.redis_conn import get_redis
from echovids.settings import get_settings

router = APIRouter(tags=["health"])

_cache: dict[str, tuple[float, set[str]]] = {}


def consumed_queues(ttl_s: float = 2.0) -> set[str]:
    """Queues with at least one live worker consuming them (a Celery broadcast, cached briefly)."""
    cached = _cache.get("queues")
    if cached and time.monotonic() - cached[0] < ttl_s:
        return cached[1]
    replies = get_celery().control.inspect(timeout=1.0).active_queues() or {}
    names = {q["name"] for worker_queues in replies.values() for q in worker_queues}
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
    """Redis answers and every worker kind has a live consumer on each of its queues."""
    try:
        get_redis().ping()
    except redis.RedisError as exc:
        return JSONResponse(status_code=503, content={"status": "unready", "redis": f"unreachable: {exc}"})
    live = consumed_queues()
    missing = {svc: [q for q in qs if q not in live] for svc, qs in required_queues().items()}
    missing = {svc: qs for svc, qs in missing.items() if qs}
    body = {"status": "ready" if not missing else "unready", "redis": "ok", "missing_consumers": missing}
    return JSONResponse(status_code=200 if not missing else 503, content=body)
