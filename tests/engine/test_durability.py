"""Durability in process: crashes at named points, on the memory store with a fake clock.

A crash is simulated by a crash point raising ``Killed`` (a ``BaseException``) with the
store's ``release`` switched off, so nothing of the dying execution cleans up, as with
SIGKILL; then the process key of the dead execution is reaped. Real processes are killed in
tests/durability.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from celery_steps import CelerySteps, Context, RetryAfterError, faults
from celery_steps.engine.liveness import process_id
from celery_steps.events import CRON_EVENT
from celery_steps.integration.beat import fire_cron
from celery_steps.options import TriggerCron
from celery_steps.testing import fire_timers, settle


class Killed(BaseException):
    """The process died here."""


def kill(point: str, label: str) -> None:
    raise Killed(f"{point}={label}")


@pytest.fixture(autouse=True)
def disarm() -> Iterator[None]:
    yield
    faults.disarm()


def crash_and_reap(steps: CelerySteps, call: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``call`` until it dies of ``Killed``, leaving everything as a SIGKILL would."""
    store = steps.runtime.store
    monkeypatch.setattr(store, "release", lambda *a, **k: None)
    with pytest.raises(Killed):
        call()
    monkeypatch.undo()
    store.reap(process_id())


def test_a_step_that_kills_its_process_counts_each_death_as_an_attempt(
    steps: CelerySteps, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    @steps.function(id="killer", trigger="t/killer", retries=1)
    def killer(ctx: Context) -> str:
        def deadly() -> str:
            calls.append(ctx.attempt)
            raise Killed("the step's process died")
        return ctx.step.run("deadly", deadly)

    # given a step that kills its process, with retries=1
    crash_and_reap(steps, lambda: steps.send("t/killer"), monkeypatch)

    # when the run is taken over after each death (and its retry comes due)
    for _ in range(6):
        steps.clock.advance(60)  # type: ignore[attr-defined]
        store = steps.runtime.store
        monkeypatch.setattr(store, "release", lambda *a, **k: None)
        try:
            fire_timers(steps)
        except Killed:
            store.reap(process_id())
        monkeypatch.undo()

    # then the step ran twice, and the run failed with WorkerLostError, not running on
    run = steps.list_runs(function_id="killer")[0]
    assert calls == [0, 1]
    assert run.status == "failed"
    assert run.steps[0].error is not None and run.steps[0].error["name"] == "WorkerLostError"
    assert run.steps[0].attempts == 2


def test_a_crash_between_the_final_write_and_the_notifications_still_resumes_the_parent(
    steps: CelerySteps, monkeypatch: pytest.MonkeyPatch
) -> None:
    @steps.function(id="kid", trigger="t/never")
    def kid(ctx: Context) -> str:
        return "done"

    @steps.function(id="parent", trigger="t/parent")
    def parent(ctx: Context) -> Any:
        return ctx.step.invoke("call", function=kid)

    # given the child's process dies right after the child's end was stored
    faults.arm("run.after_finish", label="kid", action=kill)
    crash_and_reap(steps, lambda: steps.send("t/parent"), monkeypatch)
    faults.disarm()
    [parent_run] = steps.list_runs(function_id="parent")
    [child] = steps.list_runs(function_id="kid")
    assert child.status == "completed" and steps.get_run(parent_run.id).status != "completed"

    # when the timers come due (the dead parent's watchdog, the child's outbox)
    run = settle(steps, parent_run.id)

    # then the parent resumed with the child's output
    assert run.status == "completed" and run.output == "done"


def test_a_crash_after_a_failed_run_ended_still_starts_its_on_failure_run(
    steps: CelerySteps, monkeypatch: pytest.MonkeyPatch
) -> None:
    handled: list[str] = []

    def on_failure(ctx: Context) -> None:
        handled.append(ctx.event.data["run_id"])

    @steps.function(id="doomed", trigger="t/doomed", retries=0, on_failure=on_failure)
    def doomed(ctx: Context) -> None:
        raise ValueError("no")

    faults.arm("run.after_finish", label="doomed", action=kill)
    crash_and_reap(steps, lambda: steps.send("t/doomed"), monkeypatch)
    faults.disarm()
    [run] = steps.list_runs(function_id="doomed")
    assert run.status == "failed" and handled == []

    steps.clock.advance(15)  # type: ignore[attr-defined]
    fire_timers(steps)
    fire_timers(steps)

    assert handled == [run.id]


def test_a_cron_tick_whose_task_died_after_storing_it_still_starts_one_run(
    steps: CelerySteps, monkeypatch: pytest.MonkeyPatch
) -> None:
    @steps.function(id="tick", trigger=TriggerCron("* * * * *"))
    def tick(ctx: Context) -> str:
        return str(ctx.event.data["tick"])

    # given the cron task dies between storing the tick's event and creating its run
    faults.arm("cron.after_put_event", label="tick", action=kill)
    crash_and_reap(steps, lambda: fire_cron(steps.runtime, "tick", 0), monkeypatch)
    faults.disarm()
    assert steps.list_runs(function_id="tick") == []

    # when a second beat ticks the same minute, and later the routing sweep comes due
    fire_cron(steps.runtime, "tick", 0)
    steps.clock.advance(steps.settings.route_sweep_after)  # type: ignore[attr-defined]
    fire_timers(steps)

    # then the tick started exactly one run
    [run] = steps.list_runs(function_id="tick")
    assert steps.get_run(run.id).status == "completed"
    [event_id] = run.event_ids
    assert event_id.startswith("cron:tick:")
    assert steps.get_event(event_id).event.name == CRON_EVENT


def test_a_delayed_event_due_after_the_dedupe_window_still_starts_its_run(
    steps: CelerySteps,
) -> None:
    @steps.function(id="later", trigger="t/later")
    def later(ctx: Context) -> str:
        return "ran"

    # given an event due in 3 days, with a dedupe window of 1 day
    due = steps.clock.now_ms() + 3 * 24 * 3600 * 1000
    [event_id] = steps.send("t/later", ts=due)

    # when its time comes
    steps.clock.advance(3 * 24 * 3600)  # type: ignore[attr-defined]
    fire_timers(steps)

    # then it runs
    [run] = steps.runs_for_event(event_id, timeout=0)
    assert steps.get_run(run.id).output == "ran"


def test_retry_after_raised_outside_a_step_retries_the_handler(steps: CelerySteps) -> None:
    @steps.function(id="patient", trigger="t/patient", retries=2)
    def patient(ctx: Context) -> int:
        if ctx.attempt == 0:
            raise RetryAfterError("not yet", 30)
        return ctx.attempt

    [event_id] = steps.send("t/patient")
    [run] = steps.runs_for_event(event_id)
    assert steps.get_run(run.id).status == "queued"

    run = settle(steps, run.id)

    assert run.status == "completed" and run.output == 1


def test_function_finished_and_cancelled_are_events_functions_can_trigger_on(
    steps: CelerySteps,
) -> None:
    seen: list[tuple[str, str]] = []

    @steps.function(id="audited", trigger="t/audited")
    def audited(ctx: Context) -> str:
        ctx.step.sleep("wait", "1h")
        return "ok"

    @steps.function(id="auditor", trigger=["celery_steps/function.finished",
                                           "celery_steps/function.cancelled"])
    def auditor(ctx: Context) -> None:
        seen.append((ctx.event.name, ctx.event.data["status"]))

    # given one run that completes and one that is cancelled
    [done] = steps.runs_for_event(steps.send("t/audited")[0])
    [cancelled] = steps.runs_for_event(steps.send("t/audited")[0])
    steps.cancel(cancelled.id)
    settle(steps, done.id)
    fire_timers(steps)

    # then the auditor saw each end (its own ends trigger nothing: no loop)
    assert sorted(seen) == sorted([
        ("celery_steps/function.finished", "completed"),
        ("celery_steps/function.finished", "cancelled"),
        ("celery_steps/function.cancelled", "cancelled")])
    assert len(steps.list_runs(function_id="auditor")) == 3
