"""Start a Celery worker on named queues: the part every service's worker entry shares."""

from __future__ import annotations

from echovids.celery_app import get_celery


def start_worker(
    service: str, queue_names: list[str], *, pool: str = "prefork", concurrency: int = 1, loglevel: str = "INFO"
) -> None:
    """Run this process as a Celery worker consuming ``queue_names`` (blocks until the worker stops)."""
    get_celery().worker_main(
        [
            "worker",
            "-Q",
            ",".join(queue_names),
            "-n",
            f"{service}-%i@%h",
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "--loglevel",
            loglevel,
            "--without-mingle",
            "--without-gossip",
        ]
    )
