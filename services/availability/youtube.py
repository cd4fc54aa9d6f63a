"""YouTube's answers about a video: oEmbed per video, or the Data API's videos.list 50 ids a call."""

from __future__ import annotations

from typing import Any

import httpx

from echovids.availability import VideoStatus
from echovids.settings import Settings

API_BATCH = 50  # videos.list takes at most 50 ids per call


class RetryableStatus(Exception):
    """YouTube answered 429 or 5xx: worth another try after a pause."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"YouTube answered {status_code}")
        self.status_code = status_code


def _raise_if_retryable(response: httpx.Response) -> None:
    if response.status_code == 429 or response.status_code >= 500:
        raise RetryableStatus(response.status_code)


def status_from_oembed(status_code: int) -> VideoStatus:
    """oEmbed's HTTP status: 200 live, 401/403 live but not embeddable, 404 gone, anything else unknown."""
    if status_code == 200:
        return VideoStatus.available
    if status_code in (401, 403):
        return VideoStatus.unembeddable
    if status_code == 404:
        return VideoStatus.gone
    return VideoStatus.unknown


async def oembed_status(client: httpx.AsyncClient, video_id: str, settings: Settings) -> VideoStatus:
    """One oEmbed call; raises RetryableStatus or httpx errors for the caller's retry policy."""
    response = await client.get(
        settings.youtube_oembed_url,
        params={"url": f"https://www.youtube.com/watch?v={video_id}", "format": "json"},
    )
    _raise_if_retryable(response)
    return status_from_oembed(response.status_code)


def status_from_api_item(item: dict[str, Any]) -> VideoStatus:
    """A videos.list item: private, rejected or deleted uploads cannot be watched, so they count as gone."""
    status = item.get("status") or {}
    if status.get("uploadStatus") in ("deleted", "failed", "rejected") or status.get("privacyStatus") == "private":
        return VideoStatus.gone
    if status.get("embeddable") is False:
        return VideoStatus.unembeddable
    return VideoStatus.available


async def api_statuses(client: httpx.AsyncClient, video_ids: list[str], settings: Settings) -> dict[str, VideoStatus]:
    """One videos.list call for up to 50 ids; an id missing from the answer no longer exists."""
    if len(video_ids) > API_BATCH:
        raise ValueError(f"videos.list takes at most {API_BATCH} ids")
    response = await client.get(
        f"{settings.youtube_api_url.rstrip('/')}/videos",
        params={
            "part": "status",
            "id": ",".join(video_ids),
            "key": settings.youtube_api_key or "",
            "maxResults": API_BATCH,
        },
    )
    _raise_if_retryable(response)
    if response.status_code != 200:
        # 403 is a spent quota or a bad key: nothing a retry within this query would fix.
        return dict.fromkeys(video_ids, VideoStatus.unknown)
    found = {item.get("id"): status_from_api_item(item) for item in response.json().get("items", [])}
    return {v: found.get(v, VideoStatus.gone) for v in video_ids}
