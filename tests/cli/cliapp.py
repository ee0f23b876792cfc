"""A tiny Celery app for the CLI tests: ``celery -A tests.cli.cliapp steps ...``.

Runs execute eagerly inside the CLI process; the state lives in the Redis server whose URL
is in ``CELERY_STEPS_TEST_REDIS_URL`` (started by the tests' fixture).
"""

from __future__ import annotations

import os

from celery import Celery

from celery_steps import (
    CelerySteps,
    Context,
    NonRetriableError,
    RateLimit,
    TriggerCron,
    TriggerEvent,
)

app = Celery("cliapp", broker="memory://")
app.conf.update(
    task_always_eager=True,
    steps_store_url=os.environ.get("CELERY_STEPS_TEST_REDIS_URL", "memory://"),
    steps_namespace=os.environ.get("CELERY_STEPS_TEST_NAMESPACE", "cli_tests"),
)
steps = CelerySteps(app)

# An app without the extension, for the "no CelerySteps installed" message.
bare = Celery("bare", broker="memory://")


@steps.function(
    id="greet",
    trigger=[TriggerEvent("cli/greet"), TriggerCron("0 9 * * *", tz="Europe/Paris")],
    retries=2,
    queue="greetings",
)
def greet(ctx: Context) -> dict[str, str]:
    name = ctx.step.run("lookup", lambda: str(ctx.event.data.get("name", "world")))
    message = ctx.step.run("compose", lambda who: f"hello {who}", name)
    return {"message": message}


@steps.function(id="nap", trigger="cli/nap")
def nap(ctx: Context) -> str:
    ctx.step.run("before", lambda: 1)
    ctx.step.sleep("rest", "1h")
    return "rested"


def _explode() -> None:
    raise NonRetriableError("the widget is broken")


@steps.function(id="boom", trigger="cli/boom", retries=0)
def boom(ctx: Context) -> None:
    ctx.step.run("explode", _explode)


@steps.function(id="once-an-hour", trigger="cli/limited",
                rate_limit=RateLimit(1, "1h", key="event.data.user"))
def once_an_hour(ctx: Context) -> str:
    return "started"
