"""Limits per run: how many steps, how much stored state. Past them the run fails for good."""

from __future__ import annotations

import pytest

from celery_steps import CelerySteps, Context
from celery_steps.clock import FakeClock
from celery_steps.testing import eager_steps, settle


@pytest.fixture
def small(clock: FakeClock) -> CelerySteps:
    return eager_steps(clock, steps_run_max_steps=5, steps_run_max_state_bytes=2000)


def test_a_run_looping_past_the_step_limit_fails_with_a_run_limit_error(small) -> None:
    ran = []

    @small.function(id="looper", trigger="t/loop")
    def looper(ctx: Context) -> None:
        for i in range(100):
            ran.append(ctx.step.run("item", lambda i=i: i))

    [run] = small.runs_for_event(small.send("t/loop")[0])
    run = settle(small, run.id)

    assert run.status == "failed"
    assert run.error is not None and run.error["name"] == "RunLimitError"
    assert "limit of 5 steps" in run.error["message"]
    assert "steps_run_max_steps" in run.error["message"]
    assert ran == [0, 1, 2, 3, 4]


def test_catching_the_limit_error_does_not_save_the_run(small) -> None:
    @small.function(id="stubborn", trigger="t/stubborn")
    def stubborn(ctx: Context) -> str:
        for i in range(10):
            try:
                ctx.step.run("item", lambda i=i: i)
            except Exception:
                return "caught"
        return "done"

    [run] = small.runs_for_event(small.send("t/stubborn")[0])
    run = settle(small, run.id)

    assert run.status == "failed" and run.error is not None
    assert run.error["name"] == "RunLimitError"


def test_a_run_storing_more_state_than_the_limit_fails_with_a_run_limit_error(small) -> None:
    @small.function(id="hoarder", trigger="t/hoard")
    def hoarder(ctx: Context) -> None:
        for i in range(4):
            ctx.step.run(f"chunk-{i}", lambda: "x" * 600)

    [run] = small.runs_for_event(small.send("t/hoard")[0])
    run = settle(small, run.id)

    assert run.status == "failed" and run.error is not None
    assert run.error["name"] == "RunLimitError"
    assert "steps_run_max_state_bytes" in run.error["message"]
    assert [s.status for s in run.steps][:3] == ["completed", "completed", "completed"]


def test_state_counted_across_replays_includes_what_earlier_executions_stored(small) -> None:
    @small.function(id="sleepy-hoarder", trigger="t/sleepy")
    def sleepy(ctx: Context) -> None:
        ctx.step.run("a", lambda: "x" * 800)
        ctx.step.sleep("nap", "1h")
        ctx.step.run("b", lambda: "y" * 800)
        ctx.step.sleep("nap-2", "1h")
        ctx.step.run("c", lambda: "z" * 800)

    [run] = small.runs_for_event(small.send("t/sleepy")[0])
    run = settle(small, run.id)

    # then steps a and b, stored by earlier executions, counted: c went over
    assert run.status == "failed" and run.error is not None
    assert run.error["name"] == "RunLimitError" and "step 'c'" in run.error["message"]
    assert [(s.id, s.status) for s in run.steps if s.op == "run"] == [
        ("a", "completed"), ("b", "completed"), ("c", "failed")]
