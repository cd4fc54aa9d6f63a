"""The availability cache's write side: each checked video's status, with its TTL and bookkeeping.

The read side (statuses, stats) is shared with the search merge and the gateway: echovids/availability.py.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import redis.asyncio as aioredis

from echovids.availability import CHECKED, VideoStatus, status_index, video_key
from echovids.settings import Settings


def ttl_s(status: VideoStatus, settings: Settings) -> int:
    """How long a status stays cached (an unembeddable video lives like an available one)."""
    if status is VideoStatus.gone:
        return settings.availability_ttl_gone_s
    if status is VideoStatus.unknown:
        return settings.availability_ttl_unknown_s
    return settings.availability_ttl_available_s


async def write(client: aioredis.Redis, statuses: Mapping[str, VideoStatus], settings: Settings) -> None:
    """Cache each status with its TTL and note when the video was checked."""
    if not statuses:
        return
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for video_id, status in statuses.items():
        ttl = ttl_s(status, settings)
        pipe.set(video_key(video_id), status.value, ex=ttl)
        for other in VideoStatus:
            if other is not status:
                pipe.zrem(status_index(other), video_id)
        pipe.zadd(status_index(status), {video_id: now + ttl})
        pipe.zadd(CHECKED, {video_id: now})
    await pipe.execute()
