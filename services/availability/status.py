"""A YouTube video's status, what it means for a search result, and how long it is cached."""

from __future__ import annotations

from enum import StrEnum

from echovids.settings import Settings


class VideoStatus(StrEnum):
    available = "available"
    # oEmbed 401/403: the video exists but its owner disabled embedding; the watch link still plays.
    unembeddable = "unembeddable"
    gone = "gone"
    unknown = "unknown"

    @property
    def available_flag(self) -> bool | None:
        """The result's `available`: linkable videos true, dead false, unknown null."""
        if self is VideoStatus.gone:
            return False
        if self is VideoStatus.unknown:
            return None
        return True


def ttl_s(status: VideoStatus, settings: Settings) -> int:
    """How long a status stays cached (an unembeddable video lives like an available one)."""
    if status is VideoStatus.gone:
        return settings.availability_ttl_gone_s
    if status is VideoStatus.unknown:
        return settings.availability_ttl_unknown_s
    return settings.availability_ttl_available_s
