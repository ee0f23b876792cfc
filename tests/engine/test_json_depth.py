"""Deeply nested JSON: refused where it enters (events, step results, outputs), routable at
the limit."""

from __future__ import annotations

from typing import Any

import pytest

from celery_steps import (
    CancelOn,
    CelerySteps,
    Concurrency,
    Context,
    InvalidEventError,
    TriggerEvent,
)
from celery_steps.settings import Settings
from celery_steps.testing import settle

LIMIT = Settings().json_max_depth


def nested(depth: int) -> dict[str, Any]:
    """A dict nested ``depth`` levels: ``{"d": {"d": ... {"leaf": 1}}}``."""
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"d": value}
    return value


def deep_path(depth: int) -> str:
    """The dotted path, from ``data``, to the leaf of ``nested(depth)``."""
    return "data" + ".d" * (depth - 1) + ".leaf"


@pytest.mark.parametrize("depth", [LIMIT + 1, 10_000])
def test_an_event_nested_deeper_than_the_limit_is_refused_and_nothing_is_stored(
    steps: CelerySteps, depth: int
) -> None:
    @steps.function(id="sink", trigger="t/*")
    def sink(ctx: Context) -> None:
        return None

    with pytest.raises(InvalidEventError, match=rf"more than {LIMIT} levels.*steps_json_max_depth"):
        steps.send("t/deep", nested(depth), id="too-deep")

    assert steps.runtime.store.get_event("too-deep") is None
    assert steps.list_runs() == []


def test_user_data_nested_deeper_than_the_limit_is_refused(steps: CelerySteps) -> None:
    with pytest.raises(InvalidEventError, match="steps_json_max_depth"):
        steps.send("t/deep", {}, user=nested(LIMIT + 1))


def test_an_invoke_with_data_nested_deeper_than_the_limit_is_refused(steps: CelerySteps) -> None:
    @steps.function(id="callee", trigger="t/callee")
    def callee(ctx: Context) -> None:
        return None

    with pytest.raises(InvalidEventError, match="steps_json_max_depth"):
        callee.invoke(nested(LIMIT + 1))
    assert steps.list_runs() == []


def test_the_depth_limit_is_a_setting(clock: Any) -> None:
    from celery_steps.testing import eager_steps

    steps = eager_steps(clock, steps_json_max_depth=3)
    steps.send("t/ok", nested(3))
    with pytest.raises(InvalidEventError, match="more than 3 levels"):
        steps.send("t/deep", nested(4))


def test_an_event_nested_to_the_limit_is_routed_by_conditions_keys_and_matches(
    steps: CelerySteps,
) -> None:
    leaf = "event." + deep_path(LIMIT)

    @steps.function(
        id="deep",
        trigger=TriggerEvent("t/deep", if_exp=f"{leaf} == 1"),
        idempotency=leaf,
        concurrency=Concurrency(limit=1, key=leaf),
        cancel_on=[CancelOn(event="t/cancel-deep", match=deep_path(LIMIT))],
    )
    def deep(ctx: Context) -> dict[str, Any]:
        return ctx.step.run("echo", lambda: ctx.event.data)

    [event_id] = steps.send("t/deep", nested(LIMIT))
    [run] = steps.runs_for_event(event_id)
    finished = settle(steps, run.id)

    assert finished.status == "completed"
    assert finished.output == nested(LIMIT)


def test_a_step_result_nested_deeper_than_the_limit_fails_the_step(steps: CelerySteps) -> None:
    @steps.function(id="deep-result", trigger="t/deep-result", retries=3)
    def deep_result(ctx: Context) -> None:
        ctx.step.run("make", lambda: nested(10_000))

    [event_id] = steps.send("t/deep-result")
    run = settle(steps, steps.runs_for_event(event_id)[0].id)

    assert run.status == "failed"
    assert run.steps[0].attempts == 1  # not retried: the same result would fail again
    assert run.error is not None and run.error["name"] == "SerializationError"
    assert f"more than {LIMIT} levels" in run.error["message"]
    assert "steps_json_max_depth" in run.error["message"]


def test_a_step_result_nested_to_the_limit_is_kept(steps: CelerySteps) -> None:
    @steps.function(id="limit-result", trigger="t/limit-result")
    def limit_result(ctx: Context) -> dict[str, Any]:
        return ctx.step.run("make", lambda: nested(LIMIT))

    [event_id] = steps.send("t/limit-result")
    run = settle(steps, steps.runs_for_event(event_id)[0].id)

    assert run.status == "completed"
    assert run.output == nested(LIMIT)


def test_a_run_output_nested_deeper_than_the_limit_fails_the_run(steps: CelerySteps) -> None:
    @steps.function(id="deep-output", trigger="t/deep-output", retries=0)
    def deep_output(ctx: Context) -> dict[str, Any]:
        return nested(LIMIT + 1)

    [event_id] = steps.send("t/deep-output")
    run = settle(steps, steps.runs_for_event(event_id)[0].id)

    assert run.status == "failed"
    assert run.error is not None and "steps_json_max_depth" in run.error["message"]


def test_a_run_failing_on_an_event_at_the_limit_still_sends_function_failed(
    steps: CelerySteps,
) -> None:
    @steps.function(id="fails", trigger="t/fails", retries=0,
                    on_failure=lambda ctx: ctx.event.data["event"]["data"] == nested(LIMIT))
    def fails(ctx: Context) -> None:
        raise ValueError("no")

    [event_id] = steps.send("t/fails", nested(LIMIT))
    settle(steps, steps.runs_for_event(event_id)[0].id)
    [handler_run] = steps.list_runs(function_id="fails/on-failure")

    assert settle(steps, handler_run.id).output is True
