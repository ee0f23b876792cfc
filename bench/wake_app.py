"""The app that ``bench.wakeups`` and ``bench.scale`` run in ``celery worker`` processes.

Configured from the environment so the bench and its worker nodes share one Redis and one
namespace: ``WAKE_REDIS_URL``, ``WAKE_NAMESPACE`` and ``WAKE_CONF`` (a JSON object merged into
``app.conf``, e.g. ``{"steps_wake_batch": 1}``). The bench process builds its own copy with
:func:`make_app`.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_ready

from celery_steps import CelerySteps, Context


def woke_at() -> float:
    """Wall-clock ms when the step after the sleep executes (its stored result)."""
    return time.time() * 1000.0


def bump(i: int) -> int:
    """The trivial work of ``bench.scale`` (b): one step of ``starter``, or a plain task."""
    return i + 1


def done_key(namespace: str) -> str:
    """The counter each ``bench.plain`` task increments when it has done its work."""
    return f"{namespace}:plain:done"


def make_app(url: str, namespace: str, conf: dict[str, Any]) -> tuple[Celery, CelerySteps]:
    """The bench's Celery app and its functions, on ``url`` under ``namespace``."""
    app = Celery("bench_wake", broker=url, backend=None, set_as_current=False)
    app.conf.update(
        steps_store_url=url,
        steps_namespace=namespace,
        task_default_queue=namespace,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        **conf,
    )
    steps = CelerySteps(app)

    @steps.function(id="sleeper", trigger="bench/sleep", retries=0)
    def sleeper(ctx: Context) -> float:
        """Sleep until ``data.due`` (ms), then record when the next step executes."""
        due = datetime.fromtimestamp(float(ctx.event.data["due"]) / 1000, tz=UTC)
        ctx.step.sleep_until("nap", due)
        return float(ctx.step.run("woke", woke_at))

    @steps.function(id="waiter", trigger="bench/wait", retries=0)
    def waiter(ctx: Context) -> bool:
        """Wait for ``bench/go`` with the same ``data.k``; completes when it comes."""
        got = ctx.step.wait_for_event("go", event="bench/go", timeout="1h", match="data.k")
        return got is not None

    @steps.function(id="starter", trigger="bench/start", retries=0)
    def starter(ctx: Context) -> int:
        """One ``ctx.step.run`` of :func:`bump`: what ``bench.scale`` starts by the thousand."""
        return int(ctx.step.run("bump", bump, int(ctx.event.data["i"])))

    marks = redis.Redis.from_url(url)  # (its pool reconnects after the fork)

    @app.task(name="bench.plain", ignore_result=True, shared=False)  # type: ignore[untyped-decorator]
    def plain(i: int) -> int:
        """The baseline of ``starter``: the same work as a plain Celery task, counted done."""
        out = bump(i)
        marks.incr(done_key(namespace))
        return out

    return app, steps


URL = os.environ.get("WAKE_REDIS_URL", "redis://127.0.0.1:6379/0")
NS = os.environ.get("WAKE_NAMESPACE", "bench_wake")
app, steps = make_app(URL, NS, json.loads(os.environ.get("WAKE_CONF") or "{}"))


@worker_ready.connect  # type: ignore[untyped-decorator]
def _announce_ready(sender: Any = None, **kwargs: Any) -> None:
    """Tell the bench this node consumes (``<ns>:ready:<node name>``)."""
    name = os.environ.get("WAKE_NODE", "node")
    redis.Redis.from_url(URL).set(f"{NS}:ready:{name}", time.time())
