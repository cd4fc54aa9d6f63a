"""Waiting out a Redis outage in a command-line client: retry with backoff, say so once, resume."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from kombu.exceptions import OperationalError

T = TypeVar("T")

# Redis restarting (killed, then brought back by the supervisor), or the broker unreachable for a send.
TRANSIENT: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError, OperationalError)


def with_backoff(
    call: Callable[[], T],
    what: str,
    transient: tuple[type[BaseException], ...] = TRANSIENT,
    first_s: float = 0.5,
    max_s: float = 5.0,
    give_up_s: float = 600.0,
    say: Callable[[str], None] | None = None,
) -> T:
    """``call()``, tried again while it fails transiently (waits doubling from ``first_s`` to ``max_s``), for at
    most ``give_up_s``; one line when the wait starts and one when it is over. The last error passes through."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    started = time.monotonic()
    wait = first_s
    waiting = False
    while True:
        try:
            result = call()
        except transient as exc:
            if time.monotonic() - started + wait > give_up_s:
                raise
            if not waiting:
                say(f"{what}: the service is unavailable ({type(exc).__name__}); waiting and retrying...")
                waiting = True
            time.sleep(wait)
            wait = min(max_s, wait * 2)
            continue
        if waiting:
            say(f"{what}: the service is back; resuming")
        return result
