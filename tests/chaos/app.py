"""The chaos workload: ``celery -A tests.chaos.app worker`` runs it, the driver sends to it.

Configured from the environment, so the driver and its worker subprocesses share one store:
``CHAOS_REDIS_URL`` (broker and store, the Redis the faults hit), ``CHAOS_LEDGER_URL`` (the
ledger, see :mod:`tests.chaos.ledger`), ``CHAOS_NAMESPACE``, ``CHAOS_CONF`` (a JSON object
merged into ``app.conf``), ``CHAOS_WORKER_NAME`` and, in workers only, ``CHAOS_ARM_DIR``: every
crash point of :mod:`celery_steps.faults` is armed there with an action that kills the process
only while a file named after the point exists in that directory (the first process to reach
the point claims the file by renaming it, records the crash in the ledger, then dies with
``SIGKILL``). The fault injector creates such a file to kill a process at exactly that moment.

The functions use every step kind and flow control the issue names:

- ``chaos-order`` (``chaos/order``): a step, a durable sleep, two parallel branches, an
  ``invoke`` of ``chaos-charge``, a ``run_task`` of the plain Celery task ``chaos.receipt``,
  a ``send_event`` of ``chaos/shipped``, a ``wait_for_event`` for its ``chaos/confirm``
  (matched on ``data.order``), then a last step;
- ``chaos-charge`` (invoked only): one step, ``Concurrency(limit=CHARGE_LIMIT)``;
- ``chaos-notify`` (``chaos/shipped``): one step, ``Concurrency(limit=1, key=customer)``;
- ``chaos-cron`` (``* * * * *``): one step per tick; the driver sends the cron task itself.

Every step's function records its execution in the ledger and returns its execution id.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import (
    after_task_publish,
    task_postrun,
    task_prerun,
    task_received,
    worker_ready,
)

from celery_steps import CelerySteps, Concurrency, Context, TriggerCron, faults
from celery_steps.integration.beat import due_fire
from tests.chaos.ledger import Ledger
from tests.chaos.workload import (
    CHARGE,
    CHARGE_LIMIT,
    CRON,
    CRON_TASK,
    NOTIFY,
    NOTIFY_LIMIT,
    ORDER,
    RECEIPT_TASK,
    RETRIES,
    WAIT_TIMEOUT,
)

URL = os.environ.get("CHAOS_REDIS_URL", "redis://127.0.0.1:6379/0")
NS = os.environ.get("CHAOS_NAMESPACE", "chaos")
ARM_DIR = os.environ.get("CHAOS_ARM_DIR", "")
# Shortened so that every recovery path runs within a chaos run (defaults: 120 s, 300 s, 300 s, and
# kombu's: a message a killed worker had taken comes back an hour later, from a sweep every
# 10 x 10 s, under a mutex that a worker killed while holding it keeps for 5 minutes).
DEFAULTS: dict[str, Any] = {
    "steps_route_sweep_after": 10,
    "steps_start_watchdog": 30,
    "steps_run_task_resend_after": 30,
    "broker_transport_options": {"visibility_timeout": 15, "unacked_restore_interval": 2,
                                 "unacked_restore_throttle": 1, "unacked_mutex_expire": 10},
}

# No result backend: a run_task step whose completion message is lost finds the task's outcome
# in the store, where the worker that ran the task kept it.
app = Celery("chaos_app", broker=URL)
app.conf.update(
    steps_namespace=NS,
    steps_store_url=URL,
    task_default_queue=NS,
    steps_retry_backoff_base=0.05,
    steps_retry_backoff_max=0.5,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    worker_cancel_long_running_tasks_on_connection_loss=False,
    **{**DEFAULTS, **json.loads(os.environ.get("CHAOS_CONF") or "{}")},
)
steps = CelerySteps(app)
ledger = Ledger(os.environ.get("CHAOS_LEDGER_URL", "redis://127.0.0.1:6379/1"))
_seen: set[str] = set()


# -- recording ------------------------------------------------------------------------------
def traced(ctx: Context, step_id: str, seconds: float, key: str | None = None) -> dict[str, Any]:
    """``ctx.step.run(step_id)`` of a function that records its execution (``seconds`` long)."""

    def work() -> dict[str, Any]:
        x = uuid.uuid4().hex[:12]
        fields = {"x": x, "run": ctx.run_id, "fn": ctx.function_id, "step": step_id, "key": key}
        ledger.append("exec", e="start", **fields)
        time.sleep(seconds)
        ledger.append("exec", e="end", **fields)
        return {"x": x}

    result: dict[str, Any] = ctx.step.run(step_id, work)
    mark = f"{ctx.run_id}|{step_id}"
    if mark not in _seen:  # the checkpoint is stored: the handler got the result back
        ledger.first("seen", mark, x=result["x"])
        _seen.add(mark)
    return result


# -- the plain Celery task of run_task ---------------------------------------------------------
@app.task(name=RECEIPT_TASK, shared=False, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
def receipt(run_id: str, cents: int) -> dict[str, Any]:
    """A user's own task, at least once as Celery runs it (acks late: redelivered if lost)."""
    ledger.append("task", run=run_id)
    return {"receipt": f"r-{run_id}", "cents": cents}


# -- functions --------------------------------------------------------------------------------
@steps.function(id=CHARGE, trigger="chaos/charge-direct", retries=RETRIES,
                concurrency=Concurrency(limit=CHARGE_LIMIT))
def charge(ctx: Context) -> dict[str, Any]:
    done = traced(ctx, "charge", float(ctx.event.data["seconds"]))
    return {"cents": ctx.event.data["cents"], "x": done["x"]}


@steps.function(id=NOTIFY, trigger="chaos/shipped", retries=RETRIES,
                concurrency=Concurrency(limit=NOTIFY_LIMIT, key="event.data.customer"))
def notify(ctx: Context) -> str:
    data = ctx.event.data
    traced(ctx, "notify", float(data["seconds"]), key=str(data["customer"]))
    return str(data["order"])


@steps.function(id=CRON, trigger=TriggerCron("* * * * *"), retries=RETRIES)
def cron(ctx: Context) -> str:
    traced(ctx, "tick", 0.05)
    return str(ctx.event.data["tick"])


@steps.function(id=ORDER, trigger="chaos/order", retries=RETRIES)
def order(ctx: Context) -> dict[str, Any]:
    data = ctx.event.data
    work = float(data["work"])
    traced(ctx, "reserve", work)
    ctx.step.sleep("cool", float(data["sleep"]))
    ctx.step.parallel((lambda: traced(ctx, "pack-a", work), lambda: traced(ctx, "pack-b", work)))
    charged = ctx.step.invoke("charge", function=CHARGE,
                              data={"cents": data["cents"], "seconds": data["charge"]})
    paid = ctx.step.run_task("receipt", RECEIPT_TASK, ctx.run_id, data["cents"])
    ctx.step.send_event("ship", {"name": "chaos/shipped", "data": {
        "order": data["order"], "customer": data["customer"], "seconds": work}})
    ledger.add("at-wait", ctx.run_id)
    confirmed = ctx.step.wait_for_event("confirm", event="chaos/confirm", timeout=WAIT_TIMEOUT,
                                        match="data.order")
    traced(ctx, "finish", work)
    return {"charged": charged["cents"], "receipt": paid["receipt"],
            "confirmed_by": None if confirmed is None else confirmed.id}


# -- worker side: readiness, the cron task's ticks, crash points -------------------------------
@worker_ready.connect  # type: ignore[untyped-decorator]
def _announce_ready(sender: Any = None, **kwargs: Any) -> None:
    ledger.mark_ready(os.environ.get("CHAOS_WORKER_NAME", "worker"))


def _tick_now() -> str | None:
    schedule = steps.functions[CRON].crons[0]
    fire = due_fire(schedule, steps.clock.now())
    return None if fire is None else schedule.tick_id(fire)


@task_prerun.connect  # type: ignore[untyped-decorator]
def _cron_started(sender: Any = None, task_id: str = "", **kwargs: Any) -> None:
    if getattr(sender, "name", "") == CRON_TASK:
        ledger.append("cron", e="pre", task_id=task_id, tick=_tick_now())


@task_postrun.connect  # type: ignore[untyped-decorator]
def _cron_finished(sender: Any = None, task_id: str = "", state: str = "", **kwargs: Any) -> None:
    if getattr(sender, "name", "") == CRON_TASK:
        ledger.append("cron", e="post", task_id=task_id, tick=_tick_now(), state=state)


@after_task_publish.connect  # type: ignore[untyped-decorator]
def _published(sender: str = "", headers: dict[str, Any] | None = None, body: Any = None,
               **kwargs: Any) -> None:
    """Every message the broker accepted, from any process (the driver too): the checker
    matches them with the messages workers received, to tell a message lost in the broker."""
    args = body[0] if isinstance(body, (tuple, list)) and body else []
    ledger.append("msg", e="pub", id=(headers or {}).get("id"), task=sender,
                  args=[str(a)[:80] for a in args][:3])


@task_received.connect  # type: ignore[untyped-decorator]
def _received(request: Any = None, **kwargs: Any) -> None:
    ledger.append("msg", e="recv", id=getattr(request, "id", None),
                  task=getattr(request, "name", None))


def _crash_if_armed(point: str, label: str) -> None:
    """Die here if the injector armed ``point`` (and this process is the first to claim it)."""
    armed = Path(ARM_DIR) / point
    try:
        armed.rename(armed.with_name(f"{point}.hit-{os.getpid()}"))
    except FileNotFoundError:
        return
    ledger.append("crash", point=point, label=label)
    os.kill(os.getpid(), signal.SIGKILL)


if ARM_DIR:
    for _point in faults.POINTS:
        faults.arm(_point, action=_crash_if_armed)
