"""Live checks against YouTube: in parallel, within the shared rate limit, retried, cut off at a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import redis.asyncio as aioredis
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from echovids.availability import VideoStatus
from echovids.redis_conn import redis_url
from echovids.settings import Settings
from services.availability import cache, youtube
from services.availability.ratelimit import RateLimited, SharedRateLimiter
from services.availability.stats import Counters

# Worth another try: YouTube said "slow down" or failed, or the network did (timeouts are transport errors).
RETRYABLE = (youtube.RetryableStatus, httpx.TransportError)


@dataclass
class Checker:
    """One process's view of YouTube for the length of a check: Redis, an HTTP client, the shared limiter."""

    settings: Settings
    redis: aioredis.Redis
    http: httpx.AsyncClient
    limiter: SharedRateLimiter
    counters: Counters = field(default_factory=Counters)

    async def check(self, video_ids: list[str], *, deadline: float) -> dict[str, VideoStatus]:
        """Cache and return the statuses settled before the deadline (event-loop time); the rest are left out."""
        if not video_ids:
            return {}
        batch = youtube.API_BATCH if self.settings.youtube_api_key else 1
        groups = [video_ids[i : i + batch] for i in range(0, len(video_ids), batch)]
        slots = asyncio.Semaphore(self.settings.availability_concurrency)
        tasks = [asyncio.create_task(self._settle(group, slots, deadline)) for group in groups]
        timeout = deadline - asyncio.get_running_loop().time()
        done: set[asyncio.Task[dict[str, VideoStatus]]] = set()
        if timeout > 0:
            done, _ = await asyncio.wait(tasks, timeout=timeout)
        for task in tasks:
            if task not in done:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        settled: dict[str, VideoStatus] = {}
        for task in done:
            settled.update(task.result())
        await cache.write(self.redis, settled, self.settings)
        return settled

    async def _settle(self, group: list[str], slots: asyncio.Semaphore, deadline: float) -> dict[str, VideoStatus]:
        """The group's statuses; unknown once retries are spent, nothing when no call slot came in time."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RETRYABLE),
            stop=stop_after_attempt(self.settings.availability_attempts),
            wait=wait_exponential_jitter(
                initial=self.settings.availability_backoff_s, max=self.settings.availability_backoff_max_s
            ),
            reraise=True,
        )
        async with slots:
            try:
                async for attempt in retrying:
                    with attempt:
                        return await self._call(group, deadline)
            except RateLimited:
                return {}
            except (*RETRYABLE, httpx.HTTPError, ValueError):
                # Cached as unknown for minutes, so a failing YouTube is not asked again by every query.
                return dict.fromkeys(group, VideoStatus.unknown)
        raise AssertionError("tenacity ends with a result or an exception")

    async def _call(self, group: list[str], deadline: float) -> dict[str, VideoStatus]:
        """One HTTP call, counted, after a slot of the shared rate limit."""
        await self.limiter.acquire(deadline - asyncio.get_running_loop().time())
        self.counters.youtube_calls += 1
        try:
            if self.settings.youtube_api_key:
                return await youtube.api_statuses(self.http, group, self.settings)
            return {group[0]: await youtube.oembed_status(self.http, group[0], self.settings)}
        except (*RETRYABLE, httpx.HTTPError, ValueError):
            self.counters.youtube_errors += 1
            raise


@asynccontextmanager
async def open_checker(settings: Settings) -> AsyncIterator[Checker]:
    """A Checker for one event loop; its counters reach Redis when it closes."""
    limits = httpx.Limits(max_connections=settings.availability_concurrency)
    async with (
        aioredis.Redis.from_url(redis_url(settings)) as client,
        httpx.AsyncClient(timeout=settings.availability_timeout_s, limits=limits) as http,
    ):
        limiter = SharedRateLimiter(client, settings.availability_rate_per_s, settings.availability_burst)
        checker = Checker(settings=settings, redis=client, http=http, limiter=limiter)
        try:
            yield checker
        finally:
            await checker.counters.flush(client)


_process_checkers: dict[int, Checker] = {}


async def process_checker(settings: Settings) -> Checker:
    """One Checker per worker process and event loop, kept open across queries.

    Opening an HTTP client (its TLS context) and a Redis connection for every query cost more than the
    whole cached-availability step; the worker's long-lived loop (see tasks.run) keeps these instead.
    """
    loop_id = id(asyncio.get_running_loop())
    checker = _process_checkers.get(loop_id)
    if checker is None:
        limits = httpx.Limits(max_connections=settings.availability_concurrency)
        client = aioredis.Redis.from_url(redis_url(settings))
        http = httpx.AsyncClient(timeout=settings.availability_timeout_s, limits=limits)
        limiter = SharedRateLimiter(client, settings.availability_rate_per_s, settings.availability_burst)
        checker = _process_checkers[loop_id] = Checker(settings=settings, redis=client, http=http, limiter=limiter)
    return checker
