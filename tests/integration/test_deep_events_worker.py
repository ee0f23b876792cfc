"""An event nested to steps_json_max_depth goes through a real Redis store and Celery worker:
its trigger condition, idempotency key and cancel_on match read its deepest field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from celery_steps import CancelOn, CelerySteps, Context, InvalidEventError, TriggerEvent
from celery_steps.settings import Settings
from tests.conftest import RedisServer
from tests.integration.apps import redis_app, running_worker

LIMIT = Settings().json_max_depth


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"d": value}
    return value


PATH = "data" + ".d" * (LIMIT - 1) + ".leaf"


@pytest.fixture(scope="module")
def steps(redis_server: RedisServer) -> Iterator[CelerySteps]:
    app, ext = redis_app(redis_server.url())

    @ext.function(id="deep", trigger=TriggerEvent("t/deep", if_exp=f"event.{PATH} == 1"),
                  idempotency=f"event.{PATH}",
                  cancel_on=[CancelOn(event="t/deep-cancel", match=PATH)])
    def deep(ctx: Context) -> Any:
        return ctx.step.run("echo", lambda: ctx.event.data)

    with running_worker(app):
        yield ext


def test_an_event_nested_to_the_limit_is_routed_and_runs(steps: CelerySteps) -> None:
    [event_id] = steps.send("t/deep", nested(LIMIT))
    [run] = steps.runs_for_event(event_id, timeout=20)

    assert steps.wait_for_run(run.id, timeout=20).output == nested(LIMIT)


def test_an_event_nested_past_the_limit_is_refused_and_not_stored(steps: CelerySteps) -> None:
    with pytest.raises(InvalidEventError, match="steps_json_max_depth"):
        steps.send("t/deep", nested(LIMIT + 1), id="deep-refused")

    assert steps.runtime.store.get_event("deep-refused") is None
