"""A forged message cannot make one function execute another function's run: a real worker
refuses it, logs it, acknowledges it and changes nothing. With a real redis-server (broker and
store) and an in-thread worker."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery.signals import task_postrun

from celery_steps import Context
from tests.conftest import wait_until
from tests.integration.apps import redis_app, running_worker


@pytest.fixture
def finished_tasks() -> Iterator[dict[str, Any]]:
    """Task id -> return value, for every task a worker of this process finished."""
    seen: dict[str, Any] = {}

    def handler(task_id: str = "", retval: Any = None, **kwargs: Any) -> None:
        seen[task_id] = retval

    task_postrun.connect(handler, weak=False)
    yield seen
    task_postrun.disconnect(handler)


def test_a_worker_refuses_a_message_for_one_function_naming_a_run_of_another(
    redis_url: str, caplog: pytest.LogCaptureFixture, finished_tasks: dict[str, Any],
) -> None:
    caplog.set_level(logging.INFO, logger="celery_steps")
    app, steps = redis_app(redis_url)
    calls: list[str] = []

    @steps.function(id="fn-a", trigger="t/a")
    def fn_a(ctx: Context) -> str:
        calls.append(ctx.run_id)
        return "a's output"

    @steps.function(id="fn-b", trigger="t/b")
    def fn_b(ctx: Context) -> str:
        ctx.step.run("first", lambda: "b's step")
        ctx.step.sleep("nap", "1h")
        return "b's output"

    admin = redis.Redis.from_url(redis_url)
    queue = app.conf.task_default_queue
    with running_worker(app):
        # given a run of function B, asleep after its first step
        [run] = steps.runs_for_event(steps.send("t/b")[0])
        wait_until(lambda: steps.get_run(run.id).status == "sleeping", timeout=20,
                   message="B's run to sleep")
        before = steps.get_run(run.id)

        # when a forged message to function A's task carries B's run id
        forged = app.send_task("celery_steps.fn.fn-a", args=[run.id])
        wait_until(lambda: forged.id in finished_tasks, timeout=20,
                   message="the worker to finish the forged message")

        # then its message is acknowledged: neither waiting in the queue nor unacked
        def pending_ids() -> set[str]:
            unacked = [json.loads(raw)[0] for raw in admin.hvals("unacked")]
            queued = [json.loads(raw) for raw in admin.lrange(queue, 0, -1)]
            return {m["headers"].get("id") for m in unacked + queued}

        wait_until(lambda: forged.id not in pending_ids(), timeout=10,
                   message="the forged message to be acknowledged")
        after = steps.get_run(run.id)

    # and A's handler never ran, and B's run is unchanged: status, steps and output
    assert finished_tasks[forged.id] == "foreign"
    assert calls == []
    assert after == before
    assert (after.status, after.output) == ("sleeping", None)
    assert [(s.id, s.status) for s in after.steps] == [("first", "completed"),
                                                       ("nap", "sleeping")]
    assert steps.list_runs(function_id="fn-a") == []

    # and the refusal was logged at ERROR, naming both functions and the run
    [record] = [r for r in caplog.records
                if r.levelno == logging.ERROR and "belongs to" in r.getMessage()]
    message = record.getMessage()
    assert "'fn-a'" in message and "'fn-b'" in message and run.id in message
