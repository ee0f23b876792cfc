"""invoke, send_event, parallel and multiple triggers, eagerly on the memory store."""

from __future__ import annotations

from typing import Any

import pytest

from celery_steps import CelerySteps, Context, StepError, TriggerCron
from celery_steps.testing import settle


def start(steps: CelerySteps, name: str, data: dict[str, Any] | None = None) -> str:
    return steps.runs_for_event(steps.send(name, data=data or {})[0])[0].id


def test_invoke_waits_for_the_child_and_returns_its_output(steps: CelerySteps) -> None:
    @steps.function(id="child", trigger="t/child-never")
    def child(ctx: Context) -> int:
        return int(ctx.step.run("double", lambda: ctx.event.data["n"] * 2))

    @steps.function(id="parent", trigger="t/parent")
    def parent(ctx: Context) -> Any:
        by_object = ctx.step.invoke("call-child", function=child, data={"n": 4})
        by_id = ctx.step.invoke("call-by-id", function="child", data={"n": 5})
        return [by_object, by_id]

    run = settle(steps, start(steps, "t/parent"))
    children = steps.list_runs(function_id="child")

    assert run.status == "completed" and run.output == [8, 10]
    assert [s.op for s in run.steps] == ["invoke", "invoke"]
    assert {c.parent_run_id for c in children} == {run.id}


def test_invoke_of_a_failing_child_raises_step_error_in_the_parent(steps: CelerySteps) -> None:
    @steps.function(id="bad-child", trigger="t/never", retries=0)
    def bad_child(ctx: Context) -> None:
        raise ValueError("no stock")

    @steps.function(id="careful-parent", trigger="t/careful")
    def careful_parent(ctx: Context) -> str:
        try:
            ctx.step.invoke("call", function=bad_child)
        except StepError as exc:
            return f"{exc.name}: {exc.message}"
        return "unexpected"

    run = settle(steps, start(steps, "t/careful"))

    assert run.output == "ValueError: no stock"


def test_invoke_times_out_when_the_child_does_not_end(steps: CelerySteps) -> None:
    @steps.function(id="slow-child", trigger="t/never")
    def slow_child(ctx: Context) -> None:
        ctx.step.sleep("forever", "30d")

    @steps.function(id="impatient", trigger="t/impatient", retries=0)
    def impatient(ctx: Context) -> None:
        ctx.step.invoke("call", function=slow_child, timeout="1h")

    run = settle(steps, start(steps, "t/impatient"))

    assert run.status == "failed"
    assert run.error is not None and run.error["name"] == "StepTimeoutError"


def test_invoking_an_unknown_function_id_fails_clearly(steps: CelerySteps) -> None:
    @steps.function(id="typo", trigger="t/typo", retries=3)
    def typo(ctx: Context) -> None:
        ctx.step.invoke("call", function="no-such-function")

    run = settle(steps, start(steps, "t/typo"))

    assert run.status == "failed"
    assert run.error is not None and "unknown function 'no-such-function'" in run.error["message"]


def test_send_event_sends_once_even_when_the_handler_replays(steps: CelerySteps) -> None:
    received: list[int] = []

    @steps.function(id="listener", trigger="t/notify")
    def listener(ctx: Context) -> None:
        received.append(int(ctx.event.data["i"]))

    @steps.function(id="fan-out", trigger="t/fan-out", retries=2)
    def fan_out(ctx: Context) -> list[str]:
        ids = ctx.step.send_event("notify", [{"name": "t/notify", "data": {"i": i}}
                                             for i in range(1000)])
        if ctx.attempt == 0:
            raise RuntimeError("replay after sending")
        return ids

    run = settle(steps, start(steps, "t/fan-out"))

    assert run.status == "completed"
    assert len(run.output) == 1000 == len(set(run.output))
    assert sorted(received) == list(range(1000))


def test_parallel_runs_each_branch_as_its_own_step_and_returns_in_order(
    steps: CelerySteps,
) -> None:
    calls: list[str] = []

    @steps.function(id="par", trigger="t/par")
    def par(ctx: Context) -> Any:
        ctx.step.run("before", lambda: calls.append("before"))
        results = ctx.step.parallel((
            lambda: ctx.step.run("a", lambda: calls.append("a") or "A"),
            lambda: ctx.step.run("b", lambda: calls.append("b") or "B"),
            lambda: ctx.step.run("c", lambda: calls.append("c") or "C"),
        ))
        ctx.step.run("after", lambda: calls.append("after"))
        return list(results)

    run = settle(steps, start(steps, "t/par"))

    assert run.status == "completed" and run.output == ["A", "B", "C"]
    assert sorted(calls) == ["a", "after", "b", "before", "c"]
    assert [s.id for s in run.steps] == ["before", "a", "b", "c", "after"]


def test_a_failing_parallel_branch_raises_step_error_after_its_retries(
    steps: CelerySteps,
) -> None:
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        raise ConnectionError("api down")

    @steps.function(id="par-fail", trigger="t/par-fail", retries=2)
    def par_fail(ctx: Context) -> str:
        try:
            ctx.step.parallel((lambda: ctx.step.run("ok", lambda: 1),
                               lambda: ctx.step.run("bad", flaky)))
        except StepError as exc:
            return f"{exc.step_id} {exc.name}"
        return "no"

    run = settle(steps, start(steps, "t/par-fail"))

    assert run.output == "bad ConnectionError"
    assert len(attempts) == 3


def test_a_function_with_event_and_cron_triggers_starts_from_either(
    steps: CelerySteps,
) -> None:
    @steps.function(id="multi", trigger=["t/one", "t/two", TriggerCron("0 * * * *")])
    def multi(ctx: Context) -> str:
        return ctx.event.name

    one = settle(steps, start(steps, "t/one"))
    two = settle(steps, start(steps, "t/two"))

    assert (one.output, two.output) == ("t/one", "t/two")
    assert "celery_steps.cron.multi.0" in steps.app.conf.beat_schedule


@pytest.mark.parametrize("bad", [object(), [lambda: 1, 3]])
def test_parallel_rejects_things_that_are_not_callables(steps: CelerySteps, bad: Any) -> None:
    @steps.function(id="par-bad", trigger="t/par-bad", retries=2)
    def par_bad(ctx: Context) -> None:
        ctx.step.parallel(bad)

    run = settle(steps, start(steps, "t/par-bad"))

    assert run.status == "failed"


def test_invoke_by_id_reaches_a_function_served_by_another_app_on_the_same_store(
    steps: CelerySteps,
) -> None:
    from celery import Celery

    # given a second app sharing the store that serves "pricing"
    other_app = Celery("other", set_as_current=False)
    other_app.conf.update(task_always_eager=True)
    other = CelerySteps(other_app, clock=steps.clock)
    # the memory store is per process: share it as Redis would
    other.runtime._store = steps.runtime.store
    other.runtime._store_pid = steps.runtime._store_pid

    @other.function(id="pricing", trigger="t/never")
    def pricing(ctx: Context) -> int:
        return 99

    other.runtime.store.register_functions(["pricing"])
    steps.app.conf.task_routes = {"celery_steps.fn.pricing": {"queue": "pricing"}}
    sent: list[str] = []
    steps.app.send_task = lambda name, args=None, **kw: sent.append(name)  # type: ignore[method-assign]

    @steps.function(id="checkout", trigger="t/checkout")
    def checkout(ctx: Context) -> Any:
        return ctx.step.invoke("price", function="pricing")

    run_id = start(steps, "t/checkout")
    child = steps.list_runs(function_id="pricing")

    # then the child run exists for the other app, and its task was sent by name
    assert sent == ["celery_steps.fn.pricing"]
    assert [c.parent_run_id for c in child] == [run_id]
    assert steps.get_run(run_id).status == "waiting"


def test_an_invoke_whose_child_could_not_start_starts_it_on_the_next_attempt(
    steps: CelerySteps, monkeypatch: pytest.MonkeyPatch
) -> None:
    @steps.function(id="kid", trigger="t/never")
    def kid(ctx: Context) -> str:
        return "kid done"

    @steps.function(id="guardian", trigger="t/guardian", retries=2)
    def guardian(ctx: Context) -> Any:
        return ctx.step.invoke("call", function=kid)

    # given the first attempt to start the child fails (the broker is down)
    real = steps.runtime.start_child
    failures = iter([ConnectionError("broker down")])

    def flaky_start(*args: Any) -> str:
        for exc in failures:
            raise exc
        return real(*args)

    monkeypatch.setattr(steps.runtime, "start_child", flaky_start)
    run = settle(steps, start(steps, "t/guardian"))

    assert run.status == "completed" and run.output == "kid done"
