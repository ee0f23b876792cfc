"""A worker process lost mid-step (killed, out of time, stuck in C code): the step counts as an
attempt, recovery is prompt, and a step outliving its lease is not run twice."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable

import pytest

from tests.conftest import wait_until
from tests.durability.conftest import Cluster

pytestmark = pytest.mark.slow


def test_a_step_that_kills_its_worker_process_fails_the_run_after_its_retries(
    cluster_factory: Callable[..., Cluster],
) -> None:
    # given a prefork worker and a function (retries=1) whose step calls os._exit(1)
    cluster = cluster_factory(steps_lease_ttl=1.0)
    app = cluster.app
    cluster.start_worker("prefork", pool="prefork", concurrency=2)
    cluster.wait_ready("prefork")

    # when it runs
    [event_id] = app.steps.send("dur/self-destruct")
    [run] = app.steps.runs_for_event(event_id)

    # then the run fails after 2 executions of the step, with WorkerLostError
    run = app.steps.wait_for_run(run.id, timeout=20)
    assert run.status == "failed"
    [step] = run.steps
    assert step.status == "failed"
    assert step.error is not None and step.error["name"] == "WorkerLostError"
    assert run.error is not None and run.error["name"] == "WorkerLostError"
    assert app.count("self-destruct") == 2


def test_a_step_killed_by_the_hard_time_limit_fails_the_run_after_its_retries(
    cluster_factory: Callable[..., Cluster],
) -> None:
    # given a prefork worker, a 2 s hard time limit on a function (retries=1) whose step sleeps
    cluster = cluster_factory(steps_lease_ttl=1.0,
                              task_annotations={"celery_steps.fn.overtime": {"time_limit": 2}})
    app = cluster.app
    cluster.start_worker("prefork", pool="prefork", concurrency=2)
    cluster.wait_ready("prefork")

    # when it runs
    [event_id] = app.steps.send("dur/overtime")
    [run] = app.steps.runs_for_event(event_id)

    # then the run fails after 2 executions of the step (the pool child lost each time)
    run = app.steps.wait_for_run(run.id, timeout=25)
    assert run.status == "failed"
    [step] = run.steps
    assert step.status == "failed"
    assert step.error is not None
    assert step.error["name"] in ("WorkerLostError", "TimeLimitExceeded")
    assert app.count("overtime") == 2


def test_a_run_whose_pool_process_was_killed_runs_again_within_10_seconds(
    cluster_factory: Callable[..., Cluster],
) -> None:
    # given a prefork worker with default settings running a step
    cluster = cluster_factory()
    app = cluster.app
    cluster.start_worker("prefork", pool="prefork", concurrency=2)
    cluster.wait_ready("prefork")
    [event_id] = app.steps.send("dur/long-step")
    [run] = app.steps.runs_for_event(event_id)
    [first] = wait_until(lambda: app.records("long-step"), timeout=20,
                         message="the step to start")

    # when the pool process executing it is killed with SIGKILL
    os.kill(first["pid"], signal.SIGKILL)
    killed_at = time.time()

    # then the step starts again within 10 s, and the run completes
    wait_until(lambda: len(app.records("long-step")) == 2, timeout=10,
               message="the step to start again after its process was killed")
    second = app.records("long-step")[1]
    assert second["t"] - killed_at <= 10
    run = app.steps.wait_for_run(run.id, timeout=20)
    assert run.status == "completed"
    assert run.output == 2


def test_a_run_whose_whole_worker_was_killed_runs_again_within_15_seconds_of_another_worker(
    cluster_factory: Callable[..., Cluster],
) -> None:
    # given a worker with default settings running a step
    cluster = cluster_factory()
    app = cluster.app
    doomed = cluster.start_worker("doomed", pool="prefork", concurrency=2)
    cluster.wait_ready("doomed")
    [event_id] = app.steps.send("dur/long-step")
    [run] = app.steps.runs_for_event(event_id)
    wait_until(lambda: app.records("long-step"), timeout=20, message="the step to start")

    # when the whole worker (its process group) is killed and another worker starts
    cluster.kill(doomed)
    cluster.start_worker("survivor", pool="prefork", concurrency=2)
    cluster.wait_ready("survivor")
    up_at = time.time()

    # then the step starts again within 15 s of that worker being up, and the run completes
    wait_until(lambda: len(app.records("long-step")) == 2, timeout=15,
               message="the step to start again on the new worker")
    assert app.records("long-step")[1]["t"] - up_at <= 15
    run = app.steps.wait_for_run(run.id, timeout=20)
    assert run.status == "completed"
    assert run.output == 2


def backtracking_size(pattern: re.Pattern[str], seconds: float) -> int:
    """The input size for which one match of the worker app's backtracking ``pattern`` (cubic
    time, one C call holding the GIL) takes about ``seconds`` on this machine."""
    n = 200
    while True:
        started = time.perf_counter()
        pattern.fullmatch("a" * n)
        took = time.perf_counter() - started
        if took >= 0.2:
            return int(n * (seconds / took) ** (1 / 3))
        n *= 2


def test_a_step_holding_the_gil_longer_than_its_lease_executes_once_and_completes(
    cluster_factory: Callable[..., Cluster],
) -> None:
    # given a prefork worker, a 2 s lease, and a step that is one C call of about 3.5 leases
    lease = 2.0
    cluster = cluster_factory(steps_lease_ttl=lease)
    app = cluster.app
    cluster.start_worker("prefork", pool="prefork", concurrency=2)
    cluster.wait_ready("prefork")
    n = backtracking_size(re.compile(app.BACKTRACKING), 3.5 * lease)  # measured once idle

    # when it runs
    [event_id] = app.steps.send("dur/gil-hog", data={"n": n})
    [run] = app.steps.runs_for_event(event_id)

    # then the step executes exactly once and the run completes
    run = app.steps.wait_for_run(run.id, timeout=30)
    assert run.status == "completed"
    assert run.output is True
    assert app.count("gil-hog") == 1
