"""ctx.step.run: memoization, loops, nesting, serialization, determinism."""

from __future__ import annotations

import contextlib
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from celery_steps import CelerySteps, Context, NonRetriableError, StepError
from celery_steps.errors import SerializationError
from celery_steps.testing import settle


def test_completed_steps_are_not_run_again_when_the_handler_replays(steps: CelerySteps) -> None:
    calls: list[str] = []

    @steps.function(id="two-steps", trigger="t/go", retries=3)
    def two_steps(ctx: Context) -> dict[str, Any]:
        a = ctx.step.run("a", lambda: calls.append("a") or 1)
        b = ctx.step.run("b", lambda: calls.append("b") or 2)
        if ctx.attempt == 0:
            raise RuntimeError("handler code after the steps fails once")
        return {"sum": a + b}

    [event_id] = steps.send("t/go")
    [run] = steps.runs_for_event(event_id)
    run = settle(steps, run.id)

    assert run.status == "completed"
    assert run.output == {"sum": 3}
    assert calls == ["a", "b"]  # the handler ran twice, each step once


def test_a_step_id_reused_in_a_loop_is_a_distinct_step(steps: CelerySteps) -> None:
    @steps.function(id="loop", trigger="t/loop")
    def loop(ctx: Context) -> list[int]:
        return [ctx.step.run("fetch", lambda i=i: i * 10) for i in range(3)]

    [event_id] = steps.send("t/loop")
    run = settle(steps, steps.runs_for_event(event_id)[0].id)

    assert run.output == [0, 10, 20]
    assert [s.id for s in run.steps] == ["fetch", "fetch:1", "fetch:2"]


def test_calling_a_step_inside_a_step_fails_that_step_without_retrying(
    steps: CelerySteps,
) -> None:
    @steps.function(id="nested", trigger="t/nested", retries=3)
    def nested(ctx: Context) -> None:
        ctx.step.run("outer", lambda: ctx.step.run("inner", lambda: 1))

    [event_id] = steps.send("t/nested")
    run = settle(steps, steps.runs_for_event(event_id)[0].id)

    assert run.status == "failed"
    assert run.error is not None and run.error["name"] == "NestedStepError"
    assert "cannot be nested" in run.error["message"]
    assert run.steps[0].attempts == 1


@pytest.mark.parametrize(
    "value",
    [{1, 2}, (i for i in range(2)), Decimal("1.5"), float("nan")],
    ids=["set", "generator", "decimal", "nan"],
)
def test_a_step_result_that_is_not_json_fails_with_serialization_error(
    steps: CelerySteps, value: Any
) -> None:
    seen: list[BaseException] = []

    @steps.function(id="bad-result", trigger="t/bad", retries=3)
    def bad_result(ctx: Context) -> None:
        try:
            ctx.step.run("make", lambda: value)
        except StepError as exc:
            seen.append(exc)
            raise

    [event_id] = steps.send("t/bad")
    run = settle(steps, steps.runs_for_event(event_id)[0].id)

    assert run.status == "failed"
    assert run.error is not None and run.error["name"] == "SerializationError"
    assert run.steps[0].attempts == 1  # never retried
    assert isinstance(seen[0], SerializationError) and isinstance(seen[0], StepError)


def test_a_pydantic_model_result_is_stored_as_json(steps: CelerySteps) -> None:
    class Order(BaseModel):
        id: int
        total: float

    @steps.function(id="model", trigger="t/model")
    def model(ctx: Context) -> Any:
        return ctx.step.run("load", lambda: Order(id=7, total=9.5))

    [event_id] = steps.send("t/model")
    run = settle(steps, steps.runs_for_event(event_id)[0].id)

    assert run.output == {"id": 7, "total": 9.5}


def test_changing_the_step_order_between_attempts_fails_with_non_determinism(
    steps: CelerySteps,
) -> None:
    version = {"n": 1}

    @steps.function(id="changing", trigger="t/change", retries=3)
    def changing(ctx: Context) -> None:
        first, second = ("a", "b") if version["n"] == 1 else ("b", "a")
        ctx.step.run(first, lambda: 1)
        if version["n"] == 1:
            version["n"] = 2
            raise RuntimeError("fail so the handler replays with new code")
        # user code catching everything must not hide the problem
        with contextlib.suppress(Exception):
            ctx.step.run(second, lambda: 2)

    [event_id] = steps.send("t/change")
    run = settle(steps, steps.runs_for_event(event_id)[0].id)

    assert run.status == "failed"
    assert run.error is not None and run.error["name"] == "NonDeterminismError"


def test_a_non_retriable_error_fails_the_step_at_once(steps: CelerySteps) -> None:
    def refuse() -> None:
        raise NonRetriableError("card declined")

    @steps.function(id="declined", trigger="t/declined", retries=4)
    def declined(ctx: Context) -> None:
        ctx.step.run("charge", refuse)

    [event_id] = steps.send("t/declined")
    run = settle(steps, steps.runs_for_event(event_id)[0].id)

    assert run.status == "failed"
    assert run.error is not None
    assert (run.error["name"], run.error["message"]) == ("NonRetriableError", "card declined")
    assert run.steps[0].attempts == 1
