"""Celery beat's schedule: the one place periodic tasks are declared (run it with `echovids beat`)."""

from __future__ import annotations

from typing import Any

from echovids import queues
from echovids.queues import TaskName
from echovids.settings import Settings


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Periodic tasks by entry name; each is sent by task name to its service's queue."""
    interval = settings.availability_refresh_interval_s
    upkeep = settings.library_reconcile_interval_s
    return {
        "reconcile-library": {
            "task": TaskName.RECONCILE_LIBRARY,
            "schedule": upkeep,
            "options": {"queue": queues.SEARCH_MERGE, "expires": upkeep},
        },
        "refresh-availability": {
            "task": TaskName.REFRESH_AVAILABILITY,
            "schedule": interval,
            # A run nobody picked up before the next one is due is dropped, not stacked up.
            "options": {"queue": queues.AVAILABILITY, "expires": interval},
        },
    }
