"""Fixtures: real Redis (embedded or the machine's), real workers, a real gateway."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from echovids.harness import Stack, make_stack

# The machine's Redis. Each module that runs workers takes a database of its own (external_redis), so stacks
# alive at the same time (the session's stack and a module's) never consume each other's queues.
EXTERNAL_REDIS = os.environ.get("ECHOVIDS_TEST_REDIS", "redis://127.0.0.1:6379/15")


def external_redis(db: int) -> str:
    return EXTERNAL_REDIS.rsplit("/", 1)[0] + f"/{db}"


def external_redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(EXTERNAL_REDIS, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def stack_on_own_redis(data_dir: Path, redis_url: str, **extra_env: str) -> Iterator[Stack]:
    """For a module's fixture: a running Echovids on a Redis database of its own, empty before and after."""
    if not external_redis_available():
        pytest.skip(f"no Redis at {EXTERNAL_REDIS}")
    redis.Redis.from_url(redis_url).flushdb()
    running = make_stack(data_dir, redis_url, **extra_env)
    running.start()
    yield running
    running.stop()
    redis.Redis.from_url(redis_url).flushdb()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """In-process settings pointed at a fresh data dir and the external Redis test database."""
    from echovids.settings import get_settings

    monkeypatch.setenv("ECHOVIDS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ECHOVIDS_REDIS_URL", EXTERNAL_REDIS)
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


@pytest.fixture(scope="session", params=["embedded", "external"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A running Echovids (shared by the session's tests): embedded Redis, then the machine's Redis."""
    if request.param == "external":
        if not external_redis_available():
            pytest.skip(f"no Redis at {EXTERNAL_REDIS}")
        redis.Redis.from_url(EXTERNAL_REDIS).flushdb()
        url: str | None = EXTERNAL_REDIS
    else:
        url = None
    # A small delta makes even the test library go through a real ScaNN build.
    running = make_stack(
        tmp_path_factory.mktemp(f"stack-{request.param}") / "data", url, ECHOVIDS_SEARCH_DELTA_MAX="64"
    )
    running.start()
    yield running
    running.stop()
