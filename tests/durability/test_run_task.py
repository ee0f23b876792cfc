"""``ctx.step.run_task``: the user's Celery task runs once, and its end always reaches the run."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.durability.conftest import Cluster

pytestmark = pytest.mark.slow

LEASE_TTL = 1.0


def drain_tasks_queue(cluster: Cluster) -> None:
    """Wait until every message queued so far on the tasks queue was executed: a sentinel
    sent now runs after them (one solo worker consumes that queue, in order)."""
    token = uuid.uuid4().hex
    cluster.app.sentinel.delay(token)
    wait_until(lambda: cluster.app.store.exists(f"{cluster.ns}:sentinel:{token}"), timeout=20,
               message="the tasks queue to be drained")


def test_a_crash_right_after_publishing_a_task_does_not_run_the_users_task_twice(
    cluster_factory: Callable[..., Cluster], tmp_path: Path,
) -> None:
    # given a worker that dies right after a run_task step published the user's task
    cluster = cluster_factory(steps_lease_ttl=LEASE_TTL)
    app = cluster.app
    crashed = tmp_path / "crashed"
    doomed = cluster.start_worker("doomed", queues=[cluster.ns],
                                  crash_at="run_task.after_publish=call", crash_once=crashed)
    cluster.wait_ready("doomed")
    [event_id] = app.steps.send("dur/task-caller")
    [run] = app.steps.runs_for_event(event_id)
    wait_until(lambda: crashed.exists() and doomed.poll() is not None, timeout=20,
               message="the worker to die at run_task.after_publish")

    # when another worker recovers the run, and the user's task queue is then consumed
    cluster.start_worker("survivor", queues=[cluster.ns])
    wait_until(lambda: app.steps.get_run(run.id).status == "waiting", timeout=20,
               message="the recovered run to wait for its task again")
    cluster.start_worker("tasks", queues=[app.TASKS_QUEUE])

    # then the run completes and the user's task was executed exactly once
    run = app.steps.wait_for_run(run.id, timeout=20)
    drain_tasks_queue(cluster)
    assert run.status == "completed"
    assert run.output == 42
    assert app.count("user-task") == 1


def test_a_run_task_step_whose_completion_message_is_lost_still_resumes_its_run(
    cluster_factory: Callable[..., Cluster],
) -> None:
    # given the message that reports the user's task's result goes nowhere (as if lost)
    void = f"void-{uuid.uuid4().hex[:8]}"
    cluster = cluster_factory(steps_lease_ttl=LEASE_TTL,
                              task_routes={"celery_steps.task_done": {"queue": void}})
    app = cluster.app
    cluster.start_worker("worker")
    cluster.wait_ready("worker")

    try:
        # when a run calls the user's task, which succeeds
        [event_id] = app.steps.send("dur/task-caller")
        [run] = app.steps.runs_for_event(event_id)
        wait_until(lambda: app.count("user-task") == 1, timeout=20,
                   message="the user's task to run")

        # then a bounded safety check still finds its result and the run completes
        run = app.steps.wait_for_run(run.id, timeout=40)
    finally:
        app.store.delete(void)
    drain_tasks_queue(cluster)
    assert run.status == "completed"
    assert run.output == 42
    assert app.count("user-task") == 1


def test_a_task_message_the_broker_lost_before_any_worker_took_it_is_sent_again(
    cluster_factory: Callable[..., Cluster],
) -> None:
    # given a run waiting on its run_task step, whose task message is lost from the broker
    # before any worker took it (a Redis broker restarted without it, say)
    cluster = cluster_factory(steps_lease_ttl=LEASE_TTL, steps_run_task_resend_after=3)
    app = cluster.app
    cluster.start_worker("runs", queues=[cluster.ns])
    cluster.wait_ready("runs")
    [event_id] = app.steps.send("dur/task-caller")
    [run] = app.steps.runs_for_event(event_id)
    wait_until(lambda: app.store.llen(app.TASKS_QUEUE) == 1, timeout=20,
               message="the user's task to be published")
    assert app.store.delete(app.TASKS_QUEUE) == 1

    # when a worker consumes the tasks queue
    cluster.start_worker("tasks", queues=[app.TASKS_QUEUE])

    # then the step sends the task again (steps_run_task_resend_after later) and completes,
    # the user's task having run once
    run = app.steps.wait_for_run(run.id, timeout=40)
    drain_tasks_queue(cluster)
    assert run.status == "completed"
    assert run.output == 42
    assert app.count("user-task") == 1


def test_a_task_whose_worker_died_while_running_it_is_sent_again(
    cluster_factory: Callable[..., Cluster],
) -> None:
    # given a run waiting on a user's task that is acknowledged when it starts (Celery's
    # default), running on a worker that is SIGKILLed in the middle of it
    cluster = cluster_factory(steps_lease_ttl=LEASE_TTL, steps_run_task_resend_after=3)
    app = cluster.app
    cluster.start_worker("runs", queues=[cluster.ns])
    doomed = cluster.start_worker("tasks", queues=[app.TASKS_QUEUE])
    cluster.wait_ready("runs")
    cluster.wait_ready("tasks")
    [event_id] = app.steps.send("dur/slow-task-caller", data={"seconds": 6})
    [run] = app.steps.runs_for_event(event_id)
    wait_until(lambda: app.count("slow-user-task") == 1, timeout=20,
               message="the user's task to start")
    cluster.kill(doomed)

    # when another worker consumes the tasks queue
    cluster.start_worker("tasks-2", queues=[app.TASKS_QUEUE])

    # then the step's check sees the task's process dead, sends it again, and the run
    # completes (the task ran twice: run_task is at least once)
    run = app.steps.wait_for_run(run.id, timeout=45)
    assert run.status == "completed"
    assert run.output == 42
    assert app.count("slow-user-task") == 2
