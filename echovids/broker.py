"""What the broker still holds of a job: a task message queued, or taken by a worker and not yet acknowledged.

The library upkeep asks before it takes a pending clip for lost. A job record that says ``queued`` can outlive
its message: Redis killed between a worker's take of a message and its note of it (kombu's transport pops the
message, then records it as unacknowledged), a retry that could not be sent while Redis was down, or the last
second of writes a crash loses. Such a clip would wait for its job record to expire (hours) before anything
noticed.

Read from the keys kombu's Redis transport keeps: one list per queue and priority step, and the hash of taken,
unacknowledged messages (a killed worker's stay there until the visibility timeout sends them back). A message is
in one of them from its send to its ack, but for the instant between a worker's pop and its note, which the
caller covers by looking twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import redis
from kombu.transport.redis import PRIORITY_STEPS, Channel

from echovids.celery_app import task_queues
from echovids.redis_conn import get_redis
from echovids.settings import get_settings

# Job ids are uuid4 hex (echovids.jobs): found in a message's kwargs, where a task's own id (dashed) never matches.
_JOB_ID = re.compile(rb"[0-9a-f]{32}")


def _queue_keys(names: Iterable[str] | None = None) -> list[str]:
    """The lists of the named queues (default: every queue), one a priority step."""
    names = [queue.name for queue in task_queues(get_settings())] if names is None else names
    return [name if step == 0 else f"{name}{Channel.sep}{step}" for name in names for step in PRIORITY_STEPS]


def queued(names: Iterable[str], client: redis.Redis | None = None) -> int:
    """How many task messages the named queues hold, not yet taken by a worker."""
    pipe = (client or get_redis()).pipeline(transaction=False)
    for key in _queue_keys(names):
        pipe.llen(key)
    return sum(pipe.execute())


def jobs_with_messages(job_ids: Iterable[str], client: redis.Redis | None = None) -> set[str]:
    """Those of ``job_ids`` that some queued or unacknowledged task message names (one atomic read of all)."""
    wanted = set(job_ids)
    if not wanted:
        return set()
    pipe = (client or get_redis()).pipeline(transaction=True)
    for key in _queue_keys():
        pipe.lrange(key, 0, -1)
    pipe.hvals(Channel.unacked_key)
    named: set[str] = set()
    for messages in pipe.execute():
        for message in messages:
            named.update(match.decode() for match in _JOB_ID.findall(message))
    return wanted & named
