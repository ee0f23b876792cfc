"""A run that fails for good is a failed Celery task, seen by the tools that watch Celery: the
task ends in FAILURE (``task-failed`` events, ``task_failure`` handlers), once, without being
redelivered or retried; completed and cancelled runs end in SUCCESS. Every end sends
``celery_steps/function.finished``. With a real redis-server and an in-thread worker."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from celery.signals import task_failure

from celery_steps import CelerySteps, Context
from celery_steps.errors import RunFailedError
from tests.conftest import wait_until
from tests.integration.apps import redis_app, running_worker


class EventLog:
    """Celery events captured by an ``app.events.Receiver`` in a thread."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.events: list[dict[str, Any]] = []
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._capture, daemon=True)

    def _capture(self) -> None:
        with self.app.connection_for_read() as connection:
            self._receiver = self.app.events.Receiver(
                connection, handlers={"*": self.events.append})
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def __enter__(self) -> EventLog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(10)

    def of(self, kind: str, task_name: str | None = None) -> list[dict[str, Any]]:
        names = {e["uuid"]: e.get("name") for e in self.events if e["type"] == "task-received"}
        return [e for e in self.events if e["type"] == kind and (
            task_name is None or names.get(e.get("uuid")) == task_name)]


@pytest.fixture
def app_and_steps(redis_url: str) -> tuple[Celery, CelerySteps]:
    return redis_app(redis_url, worker_send_task_events=True, task_send_sent_event=True)


@pytest.fixture
def failures() -> Iterator[list[dict[str, Any]]]:
    """What ``task_failure`` handlers receive."""
    seen: list[dict[str, Any]] = []

    def handler(sender: Any = None, task_id: str = "", exception: BaseException | None = None,
                **kwargs: Any) -> None:
        seen.append({"task": getattr(sender, "name", None), "task_id": task_id,
                     "exception": exception})

    task_failure.connect(handler, weak=False)
    yield seen
    task_failure.disconnect(handler)


def _probe_until_seen(app: Celery, events: EventLog) -> None:
    """Send a plain task until its ``task-succeeded`` event arrives: the receiver listens."""
    probe = app.tasks["probe"]

    def seen() -> bool:
        probe.delay()
        return wait_until_quiet(lambda: events.of("task-succeeded", "probe"))

    wait_until(seen, timeout=20, message="the event receiver to listen")


def _nothing() -> None:
    """The probe task."""


def wait_until_quiet(condition: Any, timeout: float = 1.0) -> bool:
    try:
        wait_until(condition, timeout=timeout)
    except AssertionError:
        return False
    return True


def test_a_run_failed_for_good_fails_its_task_once_and_the_others_succeed(
    app_and_steps: tuple[Celery, CelerySteps], failures: list[dict[str, Any]],
    redis_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    app, steps = app_and_steps
    app.task(name="probe", shared=False)(_nothing)
    executions: list[str] = []

    def charge() -> None:
        executions.append("charge")
        raise ValueError("card declined")

    @steps.function(id="charge", trigger="t/charge", retries=1)
    def charge_fn(ctx: Context) -> None:
        ctx.step.run("charge", charge)

    @steps.function(id="fine", trigger="t/fine")
    def fine(ctx: Context) -> str:
        return str(ctx.step.run("ok", lambda: "ok"))

    holding, release = threading.Event(), threading.Event()

    @steps.function(id="holder", trigger="t/holder")
    def holder(ctx: Context) -> None:
        ctx.step.run("hold", lambda: holding.set() or release.wait(10))
        ctx.step.run("after", lambda: None)

    caplog.set_level(logging.INFO, logger="celery_steps")
    with EventLog(app) as events, running_worker(app):
        _probe_until_seen(app, events)
        # when one run fails for good (after a retry), one completes and one is cancelled
        # while it executes
        [failing] = steps.runs_for_event(steps.send("t/charge")[0])
        [done] = steps.runs_for_event(steps.send("t/fine")[0])
        [held] = steps.runs_for_event(steps.send("t/holder")[0])
        assert steps.wait_for_run(failing.id, timeout=20).status == "failed"
        assert steps.wait_for_run(done.id, timeout=20).status == "completed"
        assert holding.wait(20)
        steps.cancel(held.id)
        release.set()
        wait_until(lambda: events.of("task-succeeded", "celery_steps.fn.holder"),
                   timeout=20, message="the cancelled run's task")
        [failed_event] = wait_until(lambda: events.of("task-failed"), timeout=20,
                                    message="the task-failed event")

    # then exactly one task failed: the execution that ended the failing run
    assert failed_event["uuid"] in {e["uuid"] for e in events.of(
        "task-received", "celery_steps.fn.charge")}
    assert failing.id in failed_event["exception"]
    assert "ValueError: card declined" in failed_event["exception"]
    assert "RunFailedError" in failed_event["traceback"]
    # and its first execution (which scheduled the retry) succeeded, like the other runs'
    assert len(events.of("task-succeeded", "celery_steps.fn.charge")) == 1
    assert len(events.of("task-succeeded", "celery_steps.fn.fine")) >= 1
    assert not events.of("task-retried")
    assert executions == ["charge", "charge"]

    # and task_failure handlers got the run's id and error
    [failure] = failures
    assert failure["task"] == "celery_steps.fn.charge"
    assert failure["task_id"] == failed_event["uuid"]
    exc = failure["exception"]
    assert isinstance(exc, RunFailedError)
    assert exc.run_id == failing.id and exc.function_id == "charge"
    assert exc.error["name"] == "ValueError" and "card declined" in exc.error["message"]
    assert 'raise ValueError("card declined")' in exc.error["traceback"]

    # and the failed message was acknowledged: nothing left to redeliver
    admin = redis.Redis.from_url(redis_url)
    unacked = [json.loads(raw) for raw in admin.hvals("unacked")]
    assert not [m for m in unacked if m[0]["headers"].get("id") == failed_event["uuid"]]
    assert admin.llen(app.conf.task_default_queue) == 0

    # and the engine logged the failure once at ERROR, with the run's fields and traceback
    [record] = [r for r in caplog.records
                if r.name == "celery_steps.executor" and r.levelno == logging.ERROR]
    assert (record.run_id, record.function_id) == (failing.id, "charge")  # type: ignore[attr-defined]
    assert 'raise ValueError("card declined")' in logging.Formatter().format(record)


def test_every_end_sends_function_finished_with_the_run_and_its_output_or_error(
    app_and_steps: tuple[Celery, CelerySteps],
) -> None:
    app, steps = app_and_steps
    seen: list[dict[str, Any]] = []

    @steps.function(id="worker-fn", trigger="t/work", retries=0)
    def worker_fn(ctx: Context) -> dict[str, int]:
        if ctx.event.data.get("fail"):
            ctx.step.run("fail", lambda: 1 / 0)
        if ctx.event.data.get("nap"):
            ctx.step.sleep("nap", "1h")
        return {"n": 1}

    @steps.function(id="auditor", trigger="celery_steps/function.finished")
    def auditor(ctx: Context) -> None:
        seen.append(dict(ctx.event.data))

    with running_worker(app):
        [ok] = steps.runs_for_event(steps.send("t/work")[0])
        [bad] = steps.runs_for_event(steps.send("t/work", {"fail": True})[0])
        [nap] = steps.runs_for_event(steps.send("t/work", {"nap": True})[0])
        wait_until(lambda: steps.get_run(nap.id).status == "sleeping", timeout=20)
        steps.cancel(nap.id)
        wait_until(lambda: len(seen) == 3, timeout=20, message="three function.finished")
        by_run = {data["run_id"]: data for data in seen}

    assert by_run[ok.id] == {"function_id": "worker-fn", "run_id": ok.id,
                             "status": "completed", "output": {"n": 1}}
    failed = by_run[bad.id]
    assert (failed["function_id"], failed["status"]) == ("worker-fn", "failed")
    assert failed["error"]["name"] == "ZeroDivisionError"
    assert "1 / 0" in failed["error"]["traceback"]
    cancelled = by_run[nap.id]
    assert (cancelled["status"], cancelled["error"]["name"]) == ("cancelled", "Cancelled")
