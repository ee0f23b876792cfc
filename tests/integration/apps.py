"""Celery apps with real brokers for integration tests, and a worker fixture factory."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from celery import Celery
from celery.contrib.testing.worker import start_worker

from celery_steps import CelerySteps


def redis_app(redis_url: str, broker_url: str | None = None,
              **conf: object) -> tuple[Celery, CelerySteps]:
    """A Celery app whose backend and store are one real Redis (the broker too, unless
    ``broker_url`` names another, e.g. RabbitMQ), in a fresh namespace."""
    name = f"it{uuid.uuid4().hex[:8]}"
    app = Celery(name, broker=broker_url or redis_url, backend=redis_url, set_as_current=False)
    app.conf.update({
        "steps_store_url": redis_url,
        "steps_namespace": name,
        # tests sharing one Redis never take each other's messages
        "task_default_queue": name,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "steps_retry_backoff_base": 0.05,
        "steps_retry_backoff_max": 0.5,
        # an AMQP worker's event loop otherwise sleeps until the next message, and the
        # in-thread test worker only sees that it should stop when the loop ticks
        "broker_heartbeat": 2 if (broker_url or "").startswith("amqp") else None,
        **conf,
    })
    return app, CelerySteps(app)


@contextmanager
def running_worker(app: Celery, concurrency: int = 4) -> Iterator[None]:
    """An in-thread Celery worker (thread pool), with the celery-steps bootstep."""
    with start_worker(app, pool="threads", concurrency=concurrency, perform_ping_check=False,
                      loglevel="WARNING", shutdown_timeout=10):
        yield


Declare = Callable[[CelerySteps], None]
