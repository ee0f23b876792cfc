"""``steps show`` says where a run is and why it failed: tracebacks, the step in progress,
wake times, awaited events, child runs.

In-process (click's CliRunner) on an eager memory-store app with a fake clock.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timezone
from types import SimpleNamespace

from click.testing import CliRunner

from celery_steps import CelerySteps, Context
from celery_steps.cli import format_run, format_time
from celery_steps.cli import steps as steps_command
from celery_steps.runs import Run, StepRecord
from celery_steps.testing import eager_steps, settle
from tests.conftest import wait_until


def show(ext: CelerySteps, run_id: str) -> str:
    result = CliRunner().invoke(steps_command, ["show", run_id], obj=SimpleNamespace(app=ext.app))
    assert result.exit_code == 0, result.output
    return result.output


def row(text: str, step_id: str) -> str:
    return next(line for line in text.splitlines() if re.match(rf"\d+\s+{step_id}\s", line))


def test_show_prints_the_traceback_of_a_failed_step_and_run() -> None:
    ext = eager_steps()

    def charge() -> None:
        raise ValueError("card declined")

    @ext.function(id="charge", trigger="t/charge", retries=0)
    def charge_fn(ctx: Context) -> None:
        ctx.step.run("charge", charge)

    [event_id] = ext.send("t/charge")
    run = settle(ext, ext.runs_for_event(event_id)[0].id)

    text = show(ext, run.id)

    assert "ValueError: card declined" in row(text, "charge")
    assert "traceback of step 'charge' (ValueError: card declined):" in text
    assert '    raise ValueError("card declined")' in text
    # the run's error is the step's: its traceback is not printed twice
    assert text.count('raise ValueError("card declined")') == 1


def test_show_prints_the_traceback_of_a_handler_error() -> None:
    ext = eager_steps()

    @ext.function(id="broken", trigger="t/broken", retries=0)
    def broken(ctx: Context) -> None:
        raise KeyError("missing")

    [event_id] = ext.send("t/broken")
    run = settle(ext, ext.runs_for_event(event_id)[0].id)

    text = show(ext, run.id)

    assert "traceback of the run's error (KeyError: 'missing'):" in text
    assert 'raise KeyError("missing")' in text


def test_show_lists_the_wake_time_the_awaited_event_and_the_child_run() -> None:
    ext = eager_steps()

    @ext.function(id="helper", trigger="t/never")
    def helper(ctx: Context) -> None:
        ctx.step.wait_for_event("reply", event="t/reply", timeout="1d")

    @ext.function(id="tour", trigger="t/tour")
    def tour(ctx: Context) -> None:
        ctx.step.sleep("nap", "10m")
        ctx.step.invoke("ask", function=helper, timeout="2h")

    [event_id] = ext.send("t/tour")
    [run] = ext.runs_for_event(event_id)
    nap = ext.get_run(run.id).steps[0]
    assert "wakes " + format_time(nap.wake_at) in row(show(ext, run.id), "nap")

    ext.clock.advance(600)  # type: ignore[attr-defined]
    settle(ext, run.id, max_jumps=1)
    ask = ext.get_run(run.id).steps[1]
    assert ask.child_run_id is not None and ask.wake_at is not None
    shown = row(show(ext, run.id), "ask")
    assert f"child run {ask.child_run_id}" in shown
    assert f"times out {format_time(ask.wake_at)}" in shown
    assert "waiting for t/reply" in row(show(ext, ask.child_run_id), "reply")


def test_show_lists_the_step_in_progress() -> None:
    # given a run whose step blocks in another thread, with a fast heartbeat
    ext = eager_steps(steps_lease_ttl=0.25)
    release = threading.Event()

    @ext.function(id="slow", trigger="t/slow", retries=0)
    def slow(ctx: Context) -> None:
        ctx.step.run("long", lambda: release.wait(10))

    sender = threading.Thread(target=lambda: ext.send("t/slow"))
    sender.start()
    try:
        [run] = wait_until(lambda: ext.list_runs(function_id="slow"), timeout=5)
        shown = wait_until(lambda: "in progress" in show(ext, run.id) and show(ext, run.id),
                           timeout=5, message="the step in progress")
    finally:
        release.set()
        sender.join(10)

    # then its row says it runs and since when
    assert re.search(r"long\s+run\s+running\s+1\s", row(shown, "long"))
    assert "in progress since " in row(shown, "long")


def test_a_retrying_step_says_when_it_retries() -> None:
    at = datetime(2025, 5, 1, 8, 0, tzinfo=timezone.utc)
    run = Run(id="run_1", function_id="f", status="queued", created_at=at, steps=[
        StepRecord(id="call", op="run", status="retrying", attempts=1, started_at=at,
                   wake_at=at.replace(minute=5),
                   error={"name": "ConnectionError", "message": "refused",
                          "traceback": "Traceback (most recent call last):\n  boom\n"})])

    text = format_run(run)

    assert "ConnectionError: refused; retry at 2025-05-01 08:05:00Z" in row(text, "call")
    assert "traceback of step 'call' (ConnectionError: refused):\n  Traceback" in text
