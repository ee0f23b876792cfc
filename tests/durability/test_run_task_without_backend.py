"""``run_task`` without a result backend, when the message carrying the task's outcome is lost.

Found by the chaos suite (tests/chaos) when it ran without a result backend: a whole worker
killed 33 ms after the user's task succeeded left the order run waiting at its ``run_task``
step, its outcome having travelled only in the ``celery_steps.task_done`` message. The worker
that runs the task now also keeps its outcome in the store, where the step's check finds it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from tests.conftest import wait_until
from tests.durability.conftest import Cluster, cluster_factory  # noqa: F401 (the fixture)

pytestmark = pytest.mark.slow

LEASE_TTL = 1.0


@pytest.mark.timeout(300)  # a worker subprocess, then up to 35 s of waiting
def test_a_run_task_step_whose_completion_message_is_lost_resumes_without_a_result_backend(
    cluster_factory: Callable[..., Cluster],  # noqa: F811
) -> None:
    # given an app without a result backend (docs/composition.md: run_task "needs no result
    # backend"), and the message that reports the user's task's result going nowhere
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

        # then the run still completes: its first check (10 s after) finds the outcome in
        # the store
        run = app.steps.wait_for_run(run.id, timeout=35)
    finally:
        app.store.delete(void)
    assert run.status == "completed"
    assert run.output == 42
