"""Retries: attempts counted in the store, backoff through timers, StepError at the call site."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery_steps import CelerySteps, Context, RetryAfterError, StepError
from celery_steps.clock import FakeClock
from celery_steps.store.memory import MemoryStore
from celery_steps.testing import settle


def _run_of(steps: CelerySteps, event_id: str) -> str:
    return steps.runs_for_event(event_id)[0].id


def test_a_step_that_always_raises_is_attempted_retries_plus_one_times(
    steps: CelerySteps,
) -> None:
    attempts: list[int] = []

    def always_fails(ctx: Context) -> None:
        attempts.append(ctx.attempt)
        raise ValueError("upstream down")

    @steps.function(id="always", trigger="t/always", retries=2)
    def always(ctx: Context) -> None:
        ctx.step.run("call", always_fails, ctx)

    run = settle(steps, _run_of(steps, steps.send("t/always")[0]))

    assert attempts == [0, 1, 2]
    assert run.status == "failed"
    assert run.error is not None
    assert (run.error["name"], run.error["message"]) == ("ValueError", "upstream down")
    assert run.steps[0].status == "failed" and run.steps[0].attempts == 3


def test_step_error_is_raised_at_the_call_site_and_again_on_replay_without_rerunning(
    steps: CelerySteps,
) -> None:
    calls = {"bad": 0}
    caught: list[tuple[str, str, str]] = []

    def bad() -> None:
        calls["bad"] += 1
        raise KeyError("sku-1")

    @steps.function(id="catches", trigger="t/catch", retries=1)
    def catches(ctx: Context) -> str:
        try:
            ctx.step.run("reserve", bad)
        except StepError as exc:
            caught.append((exc.step_id, exc.name, exc.message))
        fallback = ctx.step.run("fallback", lambda: "backorder")
        if ctx.attempt == 0:
            raise RuntimeError("force one replay of the handler")
        return str(fallback)

    run = settle(steps, _run_of(steps, steps.send("t/catch")[0]))

    assert run.status == "completed" and run.output == "backorder"
    assert calls["bad"] == 2  # retries=1: two attempts, none on the replay
    assert caught == [("reserve", "KeyError", "'sku-1'")] * 2


def test_retry_backoff_is_a_durable_timer_about_a_second_then_doubling(
    steps: CelerySteps, clock: FakeClock
) -> None:
    @steps.function(id="backoff", trigger="t/backoff", retries=3)
    def backoff(ctx: Context) -> None:
        ctx.step.run("flaky", lambda: 1 / 0)

    run_id = _run_of(steps, steps.send("t/backoff")[0])
    store = steps.runtime.store
    assert isinstance(store, MemoryStore)
    delays = []
    for _ in range(3):
        due = store.timer_members()[f"r|backoff|{run_id}"]
        delays.append(due - clock.now_ms())
        clock.advance(timedelta(milliseconds=due - clock.now_ms()))
        from celery_steps.runtime.timers import poll_once

        poll_once(steps.runtime)

    assert 800 <= delays[0] <= 1200
    assert 1600 <= delays[1] <= 2400
    assert 3200 <= delays[2] <= 4800
    assert steps.get_run(run_id).status == "failed"


def test_retry_after_error_sets_the_next_attempt_time(
    steps: CelerySteps, clock: FakeClock
) -> None:
    def rate_limited(ctx: Context) -> str:
        if ctx.attempt == 0:
            raise RetryAfterError("429 from the API", timedelta(minutes=10))
        return "ok"

    @steps.function(id="retry-after", trigger="t/ra")
    def retry_after(ctx: Context) -> Any:
        return ctx.step.run("call", rate_limited, ctx)

    run_id = _run_of(steps, steps.send("t/ra")[0])
    store = steps.runtime.store
    assert isinstance(store, MemoryStore)

    assert store.timer_members()[f"r|retry-after|{run_id}"] - clock.now_ms() == 600_000
    assert steps.get_run(run_id).status == "queued"
    assert settle(steps, run_id).output == "ok"


def test_handler_code_outside_steps_is_retried_then_fails_for_good(steps: CelerySteps) -> None:
    attempts: list[int] = []

    @steps.function(id="body", trigger="t/body", retries=2)
    def body(ctx: Context) -> None:
        attempts.append(ctx.attempt)
        raise ConnectionError("db unavailable")

    run = settle(steps, _run_of(steps, steps.send("t/body")[0]))

    assert attempts == [0, 1, 2]
    assert run.status == "failed"
    assert run.error is not None
    assert (run.error["name"], run.error["message"]) == ("ConnectionError", "db unavailable")
    assert 'raise ConnectionError("db unavailable")' in run.error["traceback"]


def test_on_failure_runs_as_its_own_run_with_the_failed_event(steps: CelerySteps) -> None:
    seen: list[dict[str, Any]] = []

    def notify(ctx: Context) -> str:
        seen.append({"name": ctx.event.name, **ctx.event.data})
        return "notified"

    @steps.function(id="fragile", trigger="t/fragile", retries=0, on_failure=notify)
    def fragile(ctx: Context) -> None:
        ctx.step.run("explode", lambda: 1 / 0)

    [event_id] = steps.send("t/fragile", data={"order": 7})
    run = settle(steps, _run_of(steps, event_id))
    failure_runs = steps.list_runs(function_id="fragile/on-failure")

    assert run.status == "failed"
    assert len(seen) == 1
    assert seen[0]["name"] == "celery_steps/function.failed"
    assert seen[0]["function_id"] == "fragile"
    assert seen[0]["run_id"] == run.id
    error = seen[0]["error"]
    assert (error["name"], error["message"]) == ("ZeroDivisionError", "division by zero")
    assert "1 / 0" in error["traceback"]
    assert seen[0]["event"]["data"] == {"order": 7}
    assert [r.status for r in failure_runs] == ["completed"]
