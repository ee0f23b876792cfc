"""invoke, parallel branches and plain Celery tasks as steps, on real workers and Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from celery_steps import CelerySteps, Context, StepError
from tests.conftest import Deployment, RedisServer
from tests.integration.apps import redis_app, running_worker

ACTIVE = {"now": 0, "peak": 0}
LOCK = threading.Lock()


def overlapping(label: str) -> str:
    """A branch body that records how many branches run at the same time."""
    with LOCK:
        ACTIVE["now"] += 1
        ACTIVE["peak"] = max(ACTIVE["peak"], ACTIVE["now"])
    time.sleep(0.3)
    with LOCK:
        ACTIVE["now"] -= 1
    return label


@pytest.fixture(scope="module")
def steps(redis_server: RedisServer, deployment: Deployment) -> Iterator[CelerySteps]:
    app, ext = redis_app(redis_server.url(), deployment.broker,
        steps_store_url=deployment.store)

    @app.task(name="tests.legacy_add", shared=False)
    def legacy_add(x: int, y: int) -> int:
        return x + y

    @app.task(name="tests.legacy_fail", shared=False)
    def legacy_fail() -> None:
        raise LookupError("legacy task failed")

    @ext.function(id="child", trigger="t/never")
    def child(ctx: Context) -> int:
        return int(ctx.step.run("square", lambda: ctx.event.data["n"] ** 2))

    @ext.function(id="parent", trigger="t/parent")
    def parent(ctx: Context) -> Any:
        squares = [ctx.step.invoke("sq", function=child, data={"n": n}) for n in (2, 3)]
        branches = ctx.step.parallel(tuple(
            (lambda label=label: ctx.step.run(f"branch-{label}", overlapping, label))
            for label in "abcd"))
        total = ctx.step.run_task("legacy", legacy_add, squares[0], squares[1])
        try:
            ctx.step.run_task("legacy-fail", legacy_fail)
        except StepError as exc:
            failure = exc.name
        return {"squares": squares, "branches": list(branches), "total": total,
                "failure": failure}

    with running_worker(app, concurrency=6):
        yield ext


def test_invoke_parallel_and_run_task_compose_in_one_run(steps: CelerySteps) -> None:
    [event_id] = steps.send("t/parent")
    run = steps.wait_for_run(steps.runs_for_event(event_id)[0].id, timeout=60)

    assert run.status == "completed", run.error
    assert run.output == {"squares": [4, 9], "branches": ["a", "b", "c", "d"], "total": 13,
                          "failure": "LookupError"}
    assert ACTIVE["peak"] >= 2  # branches ran at the same time on several worker threads
    assert [s.op for s in run.steps] == (
        ["invoke", "invoke"] + ["run"] * 4 + ["run_task", "run_task"])
    assert len(steps.list_runs(function_id="child")) == 2
