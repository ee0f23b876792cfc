"""What the runtime knows of a ``run_task`` Celery task, as the step's safety check reads it."""

from __future__ import annotations

from celery.signals import task_failure
from kombu.exceptions import OperationalError

from celery_steps import CelerySteps


def test_a_task_that_ended_is_known_by_its_recorded_outcome(steps: CelerySteps) -> None:
    # given a task started, then completed, in a worker
    steps.runtime.task_started("task_a")
    steps.runtime.task_ended("task_a", {"status": "completed", "result": {"n": 1}})
    # then its outcome is what the check finds (no result backend needed)
    assert steps.runtime.task_outcome("task_a") == {"status": "completed", "result": {"n": 1}}


def test_a_task_started_by_a_live_process_is_running(steps: CelerySteps) -> None:
    steps.runtime.task_started("task_b")
    assert steps.runtime.task_outcome("task_b") == {"status": "started", "alive": True}


def test_a_task_started_by_a_process_that_died_is_not_running(steps: CelerySteps) -> None:
    # given a task whose start was recorded by a process that has no key any more
    steps.runtime.store.note_task("task_c", {"status": "started", "proc": "h:1:2"}, ttl_ms=60_000)
    # then the check sees it dead (and sends it again once steps_run_task_resend_after passed)
    assert steps.runtime.task_outcome("task_c") == {"status": "started", "alive": False}


def test_a_task_never_seen_is_unknown(steps: CelerySteps) -> None:
    assert steps.runtime.task_outcome("task_d") is None


def test_a_task_result_that_is_not_json_is_kept_as_a_failure_naming_it(
    steps: CelerySteps,
) -> None:
    # when a task called by run_task returns something JSON cannot carry
    steps.runtime.task_ended("task_e", {"status": "completed", "result": {"when": object()}})
    # then the step will fail with an error that says so, instead of waiting forever
    outcome = steps.runtime.task_outcome("task_e")
    assert outcome is not None and outcome["status"] == "failed"
    assert outcome["error"]["name"] == "SerializationError"
    assert "the result of task task_e is not JSON-serializable" in outcome["error"]["message"]


def test_a_task_celery_failed_for_the_broker_being_down_is_lost_not_failed(
    steps: CelerySteps,
) -> None:
    # given a task of the app, whose code succeeded but whose callbacks Celery could not
    # publish (Redis restarting): Celery fails it with kombu's OperationalError
    @steps.app.task(name="t.receipt", shared=False)
    def receipt() -> int:
        return 1

    task_failure.send(sender=receipt, task_id="task_f",
                      exception=OperationalError("Redis is loading the dataset in memory"),
                      einfo=None)
    # then the step does not fail with it: the task counts as lost, and is sent again
    assert steps.runtime.task_outcome("task_f") == {"status": "lost", "alive": False}


def test_a_task_that_raised_is_recorded_as_failed_with_its_error(steps: CelerySteps) -> None:
    @steps.app.task(name="t.broken", shared=False)
    def broken() -> int:
        raise LookupError("no such order")

    task_failure.send(sender=broken, task_id="task_g", exception=LookupError("no such order"),
                      einfo=None)
    outcome = steps.runtime.task_outcome("task_g")
    assert outcome is not None and outcome["status"] == "failed"
    assert outcome["error"]["name"] == "LookupError"
    assert outcome["error"]["message"] == "no such order"
