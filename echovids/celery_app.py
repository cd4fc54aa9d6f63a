"""The Celery app every service shares: broker and backend on Redis, explicit queues, safe defaults."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from echovids import queues
from echovids.redis_conn import redis_url
from echovids.settings import Settings, get_settings


def task_queues(settings: Settings) -> list[Queue]:
    names = [queues.EMBED, queues.SEARCH_MERGE, queues.AVAILABILITY]
    names += [queues.shard_queue(i) for i in range(settings.search_shards)]
    return [Queue(name) for name in names]


def create_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    url = redis_url(settings)
    app = Celery("echovids", broker=url, backend=url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_queues=task_queues(settings),
        task_default_queue=queues.EMBED,
        task_create_missing_queues=False,
        # A task is acknowledged only once done, so a crashed worker's task runs again elsewhere;
        # every task is idempotent for that reason.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.task_time_limit_s,
        task_soft_time_limit=max(1, settings.task_time_limit_s - 10),
        result_expires=settings.result_expires_s,
        broker_connection_retry_on_startup=True,
        # Workers look for such tasks every 5 s (kombu's default scans every 100 s): a killed worker's job
        # resumes soon after its visibility timeout, not minutes later.
        broker_transport_options={
            "visibility_timeout": settings.broker_visibility_timeout_s,
            "unacked_restore_interval": 5,
            "unacked_restore_throttle": 1,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    return app


_apps: dict[tuple[str, int], Celery] = {}


def get_celery() -> Celery:
    """The process's Celery app for the current settings, created on first use (Redis may start late)."""
    settings = get_settings()
    key = (redis_url(settings), settings.search_shards)
    if key not in _apps:
        _apps[key] = create_celery(settings)
    return _apps[key]
