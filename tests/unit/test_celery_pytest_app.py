"""CelerySteps installs into the fresh test apps of ``celery.contrib.pytest``."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from celery_steps import CelerySteps, Context


@pytest.fixture(scope="session")
def celery_config() -> dict[str, Any]:
    return {"steps_store_url": "memory://", "task_always_eager": True}


def test_a_function_runs_on_the_celery_pytest_app(celery_app: Celery) -> None:
    steps = CelerySteps(celery_app)

    @steps.function(id="hello", trigger="t/hello")
    def hello(ctx: Context) -> str:
        return str(ctx.step.run("greet", lambda: f"hello {ctx.event.data['who']}"))

    [event_id] = steps.send("t/hello", data={"who": "celery"})
    [run] = steps.runs_for_event(event_id)

    assert run.status == "completed"
    assert run.output == "hello celery"
