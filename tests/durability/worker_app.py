"""The app the durability tests run in ``celery -A tests.durability.worker_app worker`` processes.

Configured from the environment so a test and its worker subprocesses share one Redis and one
namespace: ``DUR_REDIS_URL``, ``DUR_NAMESPACE``, ``DUR_CONF`` (a JSON object merged into
``app.conf``; ``task_routes`` is merged with the routes below) and ``DUR_WORKER_NAME`` (the key
under which a worker announces it is ready). Side effects are counted and logged in Redis, so
the test sees them across processes.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_ready

from celery_steps import CelerySteps, Concurrency, Context, TriggerCron

URL = os.environ.get("DUR_REDIS_URL", "redis://127.0.0.1:6379/0")
NS = os.environ.get("DUR_NAMESPACE", "dur")
TASKS_QUEUE = f"{NS}-tasks"  # the users' own Celery tasks (run_task) run from this queue
USER_TASK = "dur.user_task"
SLOW_USER_TASK = "dur.slow_user_task"
SENTINEL_TASK = "dur.sentinel"
BACKTRACKING = r"a*a*a*b"  # on "a" * n: cubic backtracking, one C call that holds the GIL

app = Celery("durability_app", broker=URL, backend=URL)
_conf: dict[str, Any] = json.loads(os.environ.get("DUR_CONF") or "{}")
app.conf.update(
    steps_namespace=NS,
    task_default_queue=NS,
    task_routes={USER_TASK: {"queue": TASKS_QUEUE}, SLOW_USER_TASK: {"queue": TASKS_QUEUE},
                 SENTINEL_TASK: {"queue": TASKS_QUEUE},
                 **_conf.pop("task_routes", {})},
    steps_retry_backoff_base=0.05,
    steps_retry_backoff_max=0.5,
    worker_prefetch_multiplier=1,  # a busy worker reserves no message another could run
    broker_transport_options={"visibility_timeout": 3600},  # recovery must not rely on it
    broker_connection_retry_on_startup=True,
    **_conf,
)
steps = CelerySteps(app)
store = redis.Redis.from_url(URL)


# -- what the tests read across processes -----------------------------------------------------
def bump(name: str) -> int:
    """Count one more execution of ``name``; returns the new count."""
    return int(store.incr(f"{NS}:count:{name}"))


def count(name: str) -> int:
    return int(store.get(f"{NS}:count:{name}") or 0)


def record(name: str, **fields: Any) -> None:
    """Append an entry (with the time and the pid) to the log ``name``."""
    entry = {**fields, "t": time.time(), "pid": os.getpid()}
    store.rpush(f"{NS}:log:{name}", json.dumps(entry))


def records(name: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in store.lrange(f"{NS}:log:{name}", 0, -1)]


def is_ready(worker: str) -> bool:
    return bool(store.exists(f"{NS}:ready:{worker}"))


@worker_ready.connect  # type: ignore[untyped-decorator]
def _announce_ready(sender: Any = None, **kwargs: Any) -> None:
    store.set(f"{NS}:ready:{os.environ.get('DUR_WORKER_NAME', 'worker')}", time.time())


# -- plain Celery tasks (run_task) --------------------------------------------------------------
@app.task(name=USER_TASK, shared=False)  # type: ignore[untyped-decorator]
def user_task(x: int) -> int:
    """The user's own task a run calls with ``ctx.step.run_task``."""
    bump("user-task")
    return x * 2


@app.task(name=SLOW_USER_TASK, shared=False)  # type: ignore[untyped-decorator]
def slow_user_task(x: int, seconds: float) -> int:
    """A user's task that takes a while (acknowledged when it starts: Celery's default, so a
    worker killed while it runs loses it)."""
    bump("slow-user-task")
    time.sleep(seconds)
    return x * 2


@app.task(name=SENTINEL_TASK, shared=False)  # type: ignore[untyped-decorator]
def sentinel(token: str) -> None:
    """Executed after every message queued before it on the tasks queue (one solo worker)."""
    store.set(f"{NS}:sentinel:{token}", 1)


# -- functions ------------------------------------------------------------------------------------
@steps.function(id="every-minute", trigger=TriggerCron("* * * * *"))
def every_minute(ctx: Context) -> str:
    """A cron function; the cron test sends its tick task by hand (no beat runs)."""
    return str(ctx.step.run("tick", lambda: ctx.event.data["tick"]))


@steps.function(id="fan-out", trigger="dur/fan-out", retries=0)
def fan_out(ctx: Context) -> list[str]:
    """Two parallel branches; "slow" runs for ``data.seconds`` and logs each execution."""
    seconds = float(ctx.event.data["seconds"])

    def slow() -> str:
        execution = uuid.uuid4().hex
        record("slow-branch", execution=execution, phase="start")
        time.sleep(seconds)
        record("slow-branch", execution=execution, phase="end")
        return "slow"

    results = ctx.step.parallel((lambda: ctx.step.run("slow", slow),
                                 lambda: ctx.step.run("quick", lambda: "quick")))
    return list(results)


@steps.function(id="task-caller", trigger="dur/task-caller", retries=2)
def task_caller(ctx: Context) -> int:
    return int(ctx.step.run_task("call", user_task, 21))


@steps.function(id="slow-task-caller", trigger="dur/slow-task-caller", retries=2)
def slow_task_caller(ctx: Context) -> int:
    return int(ctx.step.run_task("call", slow_user_task, 21, ctx.event.data["seconds"]))


@steps.function(id="child", trigger="dur/child", retries=0)
def child(ctx: Context) -> int:
    return int(ctx.step.run("add", lambda: int(ctx.event.data["n"]) + 1))


@steps.function(id="parent", trigger="dur/parent", retries=0)
def parent(ctx: Context) -> int:
    return int(ctx.step.invoke("call-child", function=child, data={"n": 41}))


def _note_failure(ctx: Context) -> str:
    ctx.step.run("note", lambda: bump("on-failure"))
    return str(ctx.event.data["error"]["name"])


@steps.function(id="doomed", trigger="dur/doomed", retries=0, on_failure=_note_failure)
def doomed(ctx: Context) -> None:
    def boom() -> None:
        raise ValueError("boom")

    ctx.step.run("boom", boom)


@steps.function(id="self-destruct", trigger="dur/self-destruct", retries=1)
def self_destruct(ctx: Context) -> None:
    """A step that kills its own worker process (as a segfault or an OOM kill would)."""

    def die() -> None:
        bump("self-destruct")
        os._exit(1)

    ctx.step.run("die", die)


@steps.function(id="overtime", trigger="dur/overtime", retries=1)
def overtime(ctx: Context) -> None:
    """A step that outlives the Celery hard time limit the test sets on this function."""

    def forever() -> None:
        bump("overtime")
        time.sleep(120)

    ctx.step.run("forever", forever)


@steps.function(id="one-at-a-time", trigger="dur/one-at-a-time", retries=0,
                concurrency=Concurrency(limit=1))
def one_at_a_time(ctx: Context) -> str:
    seconds = float(ctx.event.data["seconds"])

    def work() -> str:
        record("one-at-a-time", run_id=ctx.run_id)
        time.sleep(seconds)
        return ctx.run_id

    return str(ctx.step.run("work", work))


@steps.function(id="long-step", trigger="dur/long-step", retries=2)
def long_step(ctx: Context) -> int:
    """Its first execution blocks (the test kills its process); the next returns at once."""

    def work() -> int:
        n = bump("long-step")
        record("long-step", n=n)
        if n == 1:
            time.sleep(120)
        return n

    return int(ctx.step.run("work", work))


@steps.function(id="gil-hog", trigger="dur/gil-hog", retries=2)
def gil_hog(ctx: Context) -> bool:
    """One long C call holding the GIL: regex backtracking over ``data.n`` a's."""
    n = int(ctx.event.data["n"])

    def backtrack() -> bool:
        bump("gil-hog")
        return re.fullmatch(BACKTRACKING, "a" * n) is None

    return bool(ctx.step.run("backtrack", backtrack))


# -- flow control across processes (tests/durability/test_flow_control.py) -------------------
def _timed(log: str, ctx: Context) -> str:
    """A step that records its start and end (with the run's key) and works for a while."""

    def work() -> str:
        record(log, run_id=ctx.run_id, user=ctx.event.data.get("user"), phase="start")
        time.sleep(float(ctx.event.data.get("seconds", 0.4)))
        record(log, run_id=ctx.run_id, user=ctx.event.data.get("user"), phase="end")
        return ctx.run_id

    return str(ctx.step.run("work", work))


@steps.function(id="per-user", trigger="dur/per-user", retries=0,
                concurrency=[Concurrency(limit=3), Concurrency(limit=1, key="event.data.user")])
def per_user(ctx: Context) -> str:
    """At most three runs at once, and one per user."""
    return _timed("per-user", ctx)


@steps.function(id="shared-a", trigger="dur/shared", retries=0,
                concurrency=Concurrency(limit=2, key='"partner-api"', scope="env"))
def shared_a(ctx: Context) -> str:
    """Shares a limit of two with shared-b: both call the same partner API."""
    return _timed("shared", ctx)


@steps.function(id="shared-b", trigger="dur/shared", retries=0,
                concurrency=Concurrency(limit=2, key='"partner-api"', scope="env"))
def shared_b(ctx: Context) -> str:
    return _timed("shared", ctx)
