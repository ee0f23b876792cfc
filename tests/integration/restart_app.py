"""The app the Redis-restart test runs in a ``celery -A tests.integration.restart_app worker``.

Configured from the environment so the test and its worker subprocess share one Redis. Step side
effects are counted in Redis; the ``held`` step stays in flight until the test sets a key, so
the restart is sure to happen while it runs.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

from celery_steps import CelerySteps, Context

URL = os.environ.get("RESTART_REDIS_URL", "redis://127.0.0.1:6379/0")
NS = os.environ.get("RESTART_NAMESPACE", "restart")
RELEASE_KEY = f"{NS}:release"
HOLD_LIMIT = 60.0  # never hold a worker slot forever if the test died

app = Celery("restart_app", broker=URL, backend=URL)
app.conf.update(
    steps_namespace=NS,
    task_default_queue=NS,
    broker_connection_retry_on_startup=True,
)
steps = CelerySteps(app)
client = redis.Redis.from_url(URL)


def bump(name: str) -> int:
    return int(client.incr(f"{NS}:count:{name}"))


def released() -> bool:
    try:
        return bool(client.exists(RELEASE_KEY))
    except redis.exceptions.ConnectionError:  # Redis is restarting: keep holding
        return False


@steps.function(id="held", trigger="restart/held", retries=3)
def held(ctx: Context) -> list[int]:
    first = ctx.step.run("first", lambda: bump("first"))

    def hold() -> int:
        attempt = bump("held")
        deadline = time.monotonic() + HOLD_LIMIT
        while not released() and time.monotonic() < deadline:
            time.sleep(0.05)
        return attempt

    second = ctx.step.run("held", hold)
    return [first, second, ctx.step.run("third", lambda: bump("third"))]


@steps.function(id="quick", trigger="restart/quick")
def quick(ctx: Context) -> str:
    return str(ctx.step.run("only", lambda: ctx.event.data["tag"]))
