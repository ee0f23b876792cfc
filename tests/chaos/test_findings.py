"""What the chaos runs found, each reduced to a minimal reproduction (xfail until fixed)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from tests.chaos.findings import (
    sleeping_run_after_its_wake_up_message_is_lost,
    wait_after_its_event_routing_died_twice,
)
from tests.conftest import wait_until
from tests.durability.conftest import Cluster, cluster_factory  # noqa: F401 (the fixture)

LEASE_TTL = 1.0


@pytest.mark.slow
@pytest.mark.xfail(strict=True, raises=TimeoutError, reason=(
    "run_task without a result backend: the task's outcome travels only in the "
    "celery_steps.task_done message (not acks_late); when that message is lost (the worker "
    "holding or executing it is killed) the step's safety check (Runtime.task_outcome) can "
    "only read a result backend, finds none, sees the task 'started', and the run waits "
    "forever. Found by the chaos run (seed 1, a whole worker killed 33 ms after the user's "
    "task succeeded)."))
def test_a_run_task_step_whose_completion_message_is_lost_resumes_without_a_result_backend(
    cluster_factory: Callable[..., Cluster],  # noqa: F811
) -> None:
    # given an app without a result backend (docs: run_task "needs no result backend"), and
    # the message that reports the user's task's result going nowhere (as if lost)
    void = f"void-{uuid.uuid4().hex[:8]}"
    cluster = cluster_factory(steps_lease_ttl=LEASE_TTL, result_backend="disabled",
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

        # then the run still completes (its safety checks run at 10 s and 30 s)
        run = app.steps.wait_for_run(run.id, timeout=35)
    finally:
        app.store.delete(void)
    assert run.status == "completed"
    assert run.output == 42


# -- a timer is removed once its message is published: from then on, at most once ------------
@pytest.mark.xfail(strict=True, reason=(
    "the timer poller removes a run's timer as soon as the wake-up message is published "
    "(poll_once -> ack_timers); if that message is then lost (kombu's Redis transport pops "
    "it with BRPOP and records it as unacknowledged in a second round trip: a worker killed, "
    "or its connection dropped, in between loses it for good, and visibility_timeout never "
    "brings it back), the run has no timer left and never wakes. Found by the chaos run (seed "
    "2): a Concurrency-limited child run stayed 'queued' forever after its retry timer "
    "(acquire -> 'limited' -> timer at +1 s) fired, and its parent waited on it forever."))
def test_a_sleeping_run_whose_wake_up_message_is_lost_still_wakes_up() -> None:
    # given a run sleeping for 10 s, when its wake-up message is lost once on its way
    status, lost = sleeping_run_after_its_wake_up_message_is_lost()

    # then the timers still wake it up later (here: within ten minutes)
    assert len(lost) == 1
    assert status == "completed"


@pytest.mark.xfail(strict=True, reason=(
    "an event's routing sweep timer (e|<event>) is removed as soon as the sweep publishes "
    "the routing task, not when routing completes (complete_routing); route tasks are "
    "acks_late without reject_on_worker_lost, so a routing task that dies is acknowledged "
    "and not redelivered. When the first routing and the sweep's routing both die (or the "
    "sweep's message is lost), the event is never routed: a wait it should resume waits "
    "until its timeout. Found by the chaos runs (seeds 2, 3, 7): cron ticks whose task died at "
    "cron.after_put_event and whose sweep routing died at route.after_start_runs stayed "
    "'not routed' (their runs existed; a waiter would not have been resumed)."))
def test_an_event_whose_routing_dies_twice_still_resumes_the_wait_it_matches() -> None:
    # given a run waiting for a t/go event, when t/go is sent and its routing dies after
    # starting runs, then the sweep's routing dies the same way
    routed, status, deaths = wait_after_its_event_routing_died_twice()

    # then the event is still routed later (here: within five minutes), resuming the wait
    assert deaths == 2
    assert routed
    assert status == "completed"
