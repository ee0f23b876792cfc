"""Celery tasks: one per function, plus routing, parallel branches, crons and task steps."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task
from celery.signals import task_failure, task_prerun, task_success

from celery_steps.engine.steps import TASK_ID_PREFIX
from celery_steps.functions import Function
from celery_steps.integration import control  # noqa: F401 (registers the steps_clock command)
from celery_steps.integration.beat import (
    add_beat_entries,
    connect_beat_init,
    drop_stale_entries,
    fire_cron,
)
from celery_steps.integration.bootstep import (
    RUNTIME_ATTR,
    ChildHeartbeatStep,
    TimerPollerStep,
    add_worker_option,
)
from celery_steps.integration.local import LocalPoolStep
from celery_steps.integration.resilience import BrokerResilienceStep
from celery_steps.integration.routing import install_router
from celery_steps.integration.transport import (
    BRANCH_TASK,
    CRON_TASK,
    ROUTE_TASK,
    TASK_DONE,
    TASK_FAILED,
    task_failure_outcome,
)
from celery_steps.runtime import Runtime

log = logging.getLogger("celery_steps.tasks")


def install(app: Celery, runtime: Runtime) -> None:
    """Register the internal tasks and the worker bootstep on ``app``."""
    setattr(app, RUNTIME_ATTR, runtime)

    @app.task(name=ROUTE_TASK, shared=False, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def route(event_id: str, *more: str) -> None:
        if more:  # the timer pollers batch routings (steps_wake_batch)
            runtime.route_many([event_id, *more])
        else:
            runtime.route(event_id)

    @app.task(name=BRANCH_TASK, shared=False, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def branch(function_id: str, run_id: str, step_key: str) -> None:
        runtime.execute(function_id, run_id, branch=step_key)

    @app.task(name=CRON_TASK, shared=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def cron(function_id: str, index: int = 0) -> None:
        fire_cron(runtime, function_id, index)

    @app.task(name=TASK_DONE, shared=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def task_done(result: Any, run_id: str, function_id: str, step_key: str) -> None:
        runtime.resolve_task_step(run_id, function_id, step_key, {"status": "completed",
                                                                   "result": result})

    @app.task(name=TASK_FAILED, shared=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def task_failed(request: Any, exc: Any, traceback: Any, run_id: str, function_id: str,
                    step_key: str) -> None:
        outcome = task_failure_outcome(
            exc, traceback=traceback if isinstance(traceback, str) else None)
        if outcome["status"] == "lost":  # the step's check sends the task again
            log.warning("task %s of run %s failed for the broker being unreachable: %s",
                        step_key, run_id, exc)
            return
        runtime.resolve_task_step(run_id, function_id, step_key, outcome)

    app.steps["worker"].add(TimerPollerStep)
    app.steps["worker"].add(ChildHeartbeatStep)
    app.steps["worker"].add(BrokerResilienceStep)  # survive Redis restarts (docs/operations.md)
    app.steps["consumer"].add(LocalPoolStep)  # due wake-ups without the broker (bootstep)
    add_worker_option(app)

    def awaited(sender: Any, task_id: str) -> bool:
        """Whether this is a task of ``app`` that a ``run_task`` step awaits."""
        return task_id.startswith(TASK_ID_PREFIX) and getattr(sender, "app", None) is app

    @task_prerun.connect(weak=False)  # type: ignore[untyped-decorator]
    def note_task_started(sender: Any = None, task_id: str = "", **kwargs: Any) -> None:
        """A ``run_task`` task started: not sent again while this process lives."""
        if awaited(sender, task_id):
            try:
                runtime.task_started(task_id)
            except Exception:  # only a resend safety net: never fail the user's task
                log.warning("could not record the start of task %s", task_id, exc_info=True)

    @task_success.connect(weak=False)  # type: ignore[untyped-decorator]
    def note_task_completed(sender: Any = None, result: Any = None, **kwargs: Any) -> None:
        task_id = str(getattr(getattr(sender, "request", None), "id", None) or "")
        if awaited(sender, task_id):
            note_end(task_id, {"status": "completed", "result": result})

    @task_failure.connect(weak=False)  # type: ignore[untyped-decorator]
    def note_task_failed(sender: Any = None, task_id: str = "", exception: Any = None,
                         einfo: Any = None, **kwargs: Any) -> None:
        if awaited(sender, task_id) and isinstance(exception, BaseException):
            text = getattr(einfo, "traceback", None)
            note_end(task_id, task_failure_outcome(
                exception, traceback=text if isinstance(text, str) else None))

    def note_end(task_id: str, outcome: dict[str, Any]) -> None:
        """Keep a ``run_task`` task's outcome in the store: the step finds it there if the
        message reporting it is lost (no result backend needed)."""
        try:
            runtime.task_ended(task_id, outcome)
        except Exception:  # the task_done message still reports it
            log.warning("could not record the end of task %s", task_id, exc_info=True)

    @app.on_after_configure.connect(weak=False)  # type: ignore[untyped-decorator]
    def route_declared_queues(sender: Any, **kwargs: Any) -> None:
        install_router(app, runtime.registry)

    @app.on_after_finalize.connect(weak=False)  # type: ignore[untyped-decorator]
    def keep_routes_and_beat_entries(sender: Any, **kwargs: Any) -> None:
        """Re-add the router and the cron entries in case configuration replaced
        ``task_routes`` or ``beat_schedule``."""
        install_router(app, runtime.registry)
        drop_stale_entries(app, runtime.registry)
        for fn in list(runtime.registry.by_id.values()):
            if fn._crons:
                add_beat_entries(app, fn)

    connect_beat_init()

    if app.configured:  # reading the configuration earlier would load it too soon
        install_router(app, runtime.registry)


def register_function(app: Celery, runtime: Runtime, fn: Function) -> None:
    """Make ``fn`` a Celery task named ``celery_steps.fn.<id>`` (acks late: never lost).

    The execution that fails a run for good raises
    :class:`~celery_steps.errors.RunFailedError`: the task ends in ``FAILURE`` (so
    ``task_failure`` handlers, error trackers, Flower and ``celery events`` see it), its message
    is acknowledged (never redelivered) and Celery never retries it: retries are the run's own.
    Every other execution, a completed or cancelled run's included, ends in ``SUCCESS``.

    Its arguments are one run id, or several (the timer pollers resume the due runs of a
    function in tasks of up to ``steps_wake_batch``): it executes them one after the other,
    and ends in ``FAILURE`` when one of them failed for good, after the others.

    Its ``queue=`` is applied by the :class:`~celery_steps.integration.routing.FunctionQueues`
    router in ``task_routes``, not as a task attribute (deprecated, gone in Celery 6).
    """

    def run_function(run_id: str, *more: str) -> str | list[str]:
        if more:  # the timer pollers batch wake-ups (steps_wake_batch)
            return runtime.execute_many(fn.id, [run_id, *more])
        return runtime.execute(fn.id, run_id)  # raises RunFailedError when it failed the run

    run_function.__qualname__ = f"run_function[{fn.id}]"
    options: dict[str, Any] = {
        "name": fn.task_name,
        "acks_late": True,
        "reject_on_worker_lost": True,
        "acks_on_failure_or_timeout": True,  # a failed run's message is done with
        "max_retries": 0,
        "ignore_result": True,
        "base": Task,
        "shared": False,
    }
    app.task(**options)(run_function)
    if fn._crons:
        add_beat_entries(app, fn)
