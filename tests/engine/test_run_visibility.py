"""Seeing what a run did and why it failed: tracebacks, step times, the step in progress, the
run's fields on every log record, and the ERROR record of a run that failed for good."""

from __future__ import annotations

import logging
import pickle
import threading
from typing import Any

import pytest

from celery_steps import CelerySteps, Context, NonRetriableError
from celery_steps.errors import TRACEBACK_MAX_CHARS, RunFailedError, cap_traceback, error_dict
from celery_steps.testing import eager_steps, fire_timers, settle
from tests.conftest import wait_until


def _raise(exc: Exception) -> None:
    raise exc


def test_error_dict_keeps_the_traceback_of_a_raised_exception_and_its_end_when_long() -> None:
    # given an exception that was raised, one that was not, and a very long traceback
    try:
        _raise(ValueError("boom"))
    except ValueError as exc:
        raised = error_dict(exc)
    fresh = error_dict(ValueError("never raised"))
    long = "x" * (3 * TRACEBACK_MAX_CHARS) + "the end"

    # then only the raised one carries a traceback, naming where it was raised
    assert raised["name"] == "ValueError" and raised["message"] == "boom"
    assert 'raise exc' in raised["traceback"] and "ValueError: boom" in raised["traceback"]
    assert "traceback" not in fresh
    # and a long one keeps its end, within the limit, the cut said at the top
    capped = cap_traceback(long)
    assert len(capped) == TRACEBACK_MAX_CHARS
    assert capped.endswith("the end") and capped.startswith("... (")


def test_run_failed_error_carries_the_run_and_its_error_through_pickling() -> None:
    error = {"name": "ValueError", "message": "boom", "traceback": "Traceback ..."}

    copy = pickle.loads(pickle.dumps(RunFailedError("run_1", "charge", error)))

    assert (copy.run_id, copy.function_id, copy.error) == ("run_1", "charge", error)
    assert "run_1" in str(copy) and "ValueError: boom" in str(copy)


def test_each_failed_attempt_stores_its_traceback_and_the_run_keeps_the_last(
    steps: CelerySteps,
) -> None:
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        raise ConnectionError(f"attempt {len(calls)} refused")

    @steps.function(id="flaky", trigger="t/flaky", retries=1)
    def flaky_fn(ctx: Context) -> None:
        ctx.step.run("call", flaky)

    # given a step that fails its first attempt
    [run] = steps.runs_for_event(steps.send("t/flaky")[0])
    retrying = steps.get_run(run.id).steps[0]

    # then the retrying step shows that attempt's error with its traceback
    assert retrying.status == "retrying" and retrying.error is not None
    assert retrying.error["message"] == "attempt 1 refused"
    assert 'raise ConnectionError(f"attempt {len(calls)} refused")' in retrying.error["traceback"]

    # when the second (last) attempt fails too
    ended = settle(steps, run.id)

    # then the step keeps the last attempt's error, and the run fails with it, traceback too
    step = ended.steps[0]
    assert step.status == "failed" and step.error is not None
    assert step.error["message"] == "attempt 2 refused"
    assert ended.error is not None and ended.error["message"] == "attempt 2 refused"
    assert ended.error["traceback"] == step.error["traceback"]


def test_a_handler_exception_fails_the_run_with_its_traceback(steps: CelerySteps) -> None:
    @steps.function(id="broken", trigger="t/broken", retries=0)
    def broken(ctx: Context) -> None:
        raise KeyError("missing")

    [run] = steps.runs_for_event(steps.send("t/broken")[0])
    ended = settle(steps, run.id)

    assert ended.status == "failed" and ended.error is not None
    assert ended.error["name"] == "KeyError"
    assert 'raise KeyError("missing")' in ended.error["traceback"]


def test_every_step_that_ended_has_a_start_and_an_end(steps: CelerySteps) -> None:
    @steps.function(id="helper", trigger="t/never")
    def helper(ctx: Context) -> int:
        return 1

    @steps.function(id="tour", trigger="t/tour", retries=0)
    def tour(ctx: Context) -> None:
        ctx.step.run("fetch", lambda: 1)
        ctx.step.sleep("pause", "1s")
        ctx.step.send_event("tell", {"name": "t/told"})
        ctx.step.invoke("ask", function=helper)
        ctx.step.wait_for_event("answer", event="t/answer", timeout="1h")
        ctx.step.wait_for_event("silence", event="t/nothing", timeout="1m")
        ctx.step.run("refuse", lambda: _raise(NonRetriableError("no")))

    [run] = steps.runs_for_event(steps.send("t/tour")[0])
    steps.clock.advance(1)  # type: ignore[attr-defined]
    fire_timers(steps)
    assert steps.get_run(run.id).steps[-1].id == "answer"
    steps.send("t/answer")
    ended = settle(steps, run.id)

    assert [s.id for s in ended.steps] == ["fetch", "pause", "tell", "ask", "answer",
                                           "silence", "refuse"]
    for step in ended.steps:
        assert step.started_at is not None and step.ended_at is not None, step.id
        assert step.started_at <= step.ended_at, step.id


def test_the_step_executing_now_is_listed_as_running_until_it_checkpoints() -> None:
    # given a run whose step blocks, executed in another thread, with a fast heartbeat
    steps = eager_steps(steps_lease_ttl=0.25)
    release = threading.Event()

    @steps.function(id="slow", trigger="t/slow", retries=0)
    def slow(ctx: Context) -> str:
        ctx.step.run("quick", lambda: 1)
        return str(ctx.step.run("long", lambda: release.wait(10) and "done"))

    worker = threading.Thread(target=lambda: steps.send("t/slow", id="slow-1"))
    worker.start()
    try:
        # when the heartbeat beats while the step runs
        running = wait_until(
            lambda: next((s for s in _runs(steps)[0].steps if s.status == "running"), None)
            if _runs(steps) else None, timeout=5, message="the running step")

        # then the run lists that step as running, since it started, after the finished one
        assert running.id == "long" and running.attempts == 1
        assert running.started_at is not None and running.ended_at is None
        assert [s.id for s in _runs(steps)[0].steps] == ["quick", "long"]
    finally:
        release.set()
        worker.join(10)

    # and once it checkpointed nothing is running any more
    ended = steps.get_run(_runs(steps)[0].id)
    assert ended.status == "completed"
    assert [s.status for s in ended.steps] == ["completed", "completed"]


def _runs(steps: CelerySteps) -> list[Any]:
    return steps.list_runs(function_id="slow", status=None, limit=1)


def test_log_records_of_a_run_carry_its_fields_and_extra_passes_through(
    steps: CelerySteps, caplog: pytest.LogCaptureFixture,
) -> None:
    @steps.function(id="chatty", trigger="t/chatty", retries=0)
    def chatty(ctx: Context) -> None:
        ctx.logger.info("before", extra={"order": 7})
        ctx.step.run("work", lambda: ctx.logger.warning("inside"))

    caplog.set_level(logging.INFO, logger="celery_steps")
    [run] = steps.runs_for_event(steps.send("t/chatty")[0])
    settle(steps, run.id)

    before = next(r for r in caplog.records if r.getMessage().endswith("before"))
    inside = next(r for r in caplog.records if r.getMessage().endswith("inside"))
    assert (before.run_id, before.function_id, before.step_id, before.attempt) == (  # type: ignore[attr-defined]
        run.id, "chatty", None, 0)
    assert before.order == 7  # type: ignore[attr-defined]
    assert (inside.run_id, inside.step_id, inside.attempt) == (run.id, "work", 0)  # type: ignore[attr-defined]


def test_a_run_that_fails_for_good_logs_one_error_with_its_traceback_and_fields(
    steps: CelerySteps, caplog: pytest.LogCaptureFixture,
) -> None:
    def charge() -> None:
        raise ValueError("card declined")

    @steps.function(id="charge", trigger="t/charge", retries=0)
    def charge_fn(ctx: Context) -> None:
        ctx.step.run("charge", charge)

    caplog.set_level(logging.INFO, logger="celery_steps")
    [run] = steps.runs_for_event(steps.send("t/charge")[0])
    settle(steps, run.id)

    [record] = [r for r in caplog.records
                if r.name == "celery_steps.executor" and r.levelno == logging.ERROR]
    assert run.id in record.getMessage() and "ValueError: card declined" in record.getMessage()
    assert record.run_id == run.id and record.function_id == "charge"  # type: ignore[attr-defined]
    assert record.exc_info is not None
    text = logging.Formatter().format(record)
    assert 'raise ValueError("card declined")' in text


def test_engine_records_outside_a_run_have_empty_run_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    steps = eager_steps()
    caplog.set_level(logging.DEBUG, logger="celery_steps")

    steps.runtime.execute("nothing", "run_missing")
    steps.runtime.executor  # noqa: B018 (builds the executor, which installs the filter)
    logging.getLogger("celery_steps.executor").warning("not about a run")

    record = next(r for r in caplog.records if r.getMessage() == "not about a run")
    assert (record.run_id, record.function_id, record.step_id, record.attempt) == (  # type: ignore[attr-defined]
        None, None, None, None)
