"""The app the crash test runs in ``celery -A tests.integration.crash_app worker`` processes.

Configured from the environment so the test and its worker subprocesses share one Redis.
Step side effects are counted in Redis, so the test sees them across processes.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

from celery_steps import CelerySteps, Context, TriggerCron

URL = os.environ.get("CRASH_REDIS_URL", "redis://127.0.0.1:6379/0")
NS = os.environ.get("CRASH_NAMESPACE", "crash")

app = Celery("crash_app", broker=URL, backend=URL)
app.conf.update(
    steps_namespace=NS,
    task_default_queue=NS,
    steps_lease_ttl=float(os.environ.get("CRASH_LEASE_TTL", "1.0")),
    broker_transport_options={"visibility_timeout": 3600},  # recovery must not rely on it
    broker_connection_retry_on_startup=True,
)
steps = CelerySteps(app)
counter = redis.Redis.from_url(URL)


def bump(name: str) -> int:
    return int(counter.incr(f"{NS}:count:{name}"))


@steps.function(id="crashy", trigger="crash/go", retries=3)
def crashy(ctx: Context) -> dict[str, int]:
    first = ctx.step.run("first", lambda: bump("first"))

    def slow() -> int:
        attempt = bump("slow")
        if attempt == 1:
            time.sleep(120)  # the test SIGKILLs the worker while this step runs
        return attempt

    second = ctx.step.run("slow", slow)
    third = ctx.step.run("third", lambda: bump("third"))
    return {"first": first, "slow": second, "third": third}


@steps.function(id="outage", trigger="crash/outage", retries=3)
def outage(ctx: Context) -> list[int]:
    first = ctx.step.run("first", lambda: bump("first"))

    def slow() -> int:
        attempt = bump("slow")
        time.sleep(1.5)  # the test takes Redis down now: this checkpoint meets the outage
        return attempt

    second = ctx.step.run("slow", slow)
    return [first, second, ctx.step.run("third", lambda: bump("third"))]


@steps.function(id="ticker", trigger=TriggerCron("* * * * *", tz="Europe/Paris"))
def ticker(ctx: Context) -> str:
    """Started by beat every minute (the two-beats test runs beat processes for it)."""
    return str(ctx.event.data["tick"])
