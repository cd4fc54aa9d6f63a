"""/v1/availability: how the YouTube availability cache and checks are doing."""

from __future__ import annotations

from fastapi import APIRouter

from echovids.availability import AvailabilityStats, snapshot

router = APIRouter(prefix="/v1/availability", tags=["availability"])


@router.get("/stats", response_model=AvailabilityStats)
def availability_stats() -> AvailabilityStats:
    """Cached videos by status, cache hit rate, YouTube calls and errors (totals over every worker)."""
    return snapshot()
