"""The periodic refresh: re-check catalog videos, least recently checked first, within the shared rate limit."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis
from sqlalchemy import select

from echovids import catalog
from echovids.availability import BOOKKEEPING, CHECKED, VideoStatus, text
from echovids.settings import Settings
from services.availability.checker import open_checker

CURSOR = f"{BOOKKEEPING}refresh:cursor"
LOCK = f"{BOOKKEEPING}refresh:lock"
# Catalog rows enrolled per run: a large catalog is walked over several runs instead of read whole each minute.
ENROL_PER_RUN = 10_000


def _catalog_after(clip_id: str, limit: int) -> list[tuple[str, str]]:
    """(clip id, YouTube id) of catalog clips after clip_id, in id order."""
    query = (
        select(catalog.Clip.id, catalog.Clip.youtube_id)
        .where(catalog.Clip.youtube_id.is_not(None), catalog.Clip.id > clip_id)
        .order_by(catalog.Clip.id)
        .limit(limit)
    )
    with catalog.session() as s:
        return [(row[0], row[1]) for row in s.execute(query) if row[1]]


def _in_catalog(video_ids: list[str]) -> set[str]:
    """Those of the videos some catalog clip still uses."""
    if not video_ids:
        return set()
    query = select(catalog.Clip.youtube_id).where(catalog.Clip.youtube_id.in_(video_ids)).distinct()
    with catalog.session() as s:
        return {vid for vid in s.scalars(query) if vid}


async def enrol(client: aioredis.Redis, limit: int = ENROL_PER_RUN) -> int:
    """Add catalog videos not yet in the checked set as never checked (score 0); walks on from a cursor."""
    after = text(await client.get(CURSOR) or b"")
    rows = _catalog_after(after, limit)
    if rows:
        await client.zadd(CHECKED, {vid: 0 for _, vid in rows}, nx=True)
    # At the end of the catalog, start over: clips added since (random ids) may sort before the cursor.
    await client.set(CURSOR, rows[-1][0] if len(rows) == limit else "")
    return len(rows)


async def refresh(settings: Settings, batch: int | None = None) -> dict[str, VideoStatus]:
    """One run: enrol, then re-check the least recently checked catalog videos; skipped while a run is going."""
    batch = settings.availability_refresh_batch if batch is None else batch
    async with open_checker(settings) as checker:
        client = checker.redis
        token = uuid.uuid4().hex
        if batch <= 0 or not await client.set(
            LOCK, token, nx=True, ex=int(settings.availability_refresh_interval_s) + 30
        ):
            return {}
        try:
            await enrol(client)
            oldest = [text(m) for m in await client.zrange(CHECKED, 0, batch - 1)]
            present = _in_catalog(oldest)
            dropped = [vid for vid in oldest if vid not in present]
            if dropped:
                await client.zrem(CHECKED, *dropped)  # no clip uses them any more
            # Finish before the next beat; what is left stays oldest and goes first next time.
            deadline = asyncio.get_running_loop().time() + settings.availability_refresh_interval_s
            statuses = await checker.check([vid for vid in oldest if vid in present], deadline=deadline)
            checker.counters.refreshed += len(statuses)
            return statuses
        finally:
            if text(await client.get(LOCK) or b"") == token:
                await client.delete(LOCK)
