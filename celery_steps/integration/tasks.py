"""Celery tasks: one per function, plus routing, parallel branches, crons and task steps."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task
from celery.signals import task_prerun

from celery_steps.engine.steps import TASK_ID_PREFIX
from celery_steps.errors import error_dict
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
from celery_steps.integration.resilience import BrokerResilienceStep
from celery_steps.integration.routing import install_router
from celery_steps.integration.transport import (
    BRANCH_TASK,
    CRON_TASK,
    ROUTE_TASK,
    TASK_DONE,
    TASK_FAILED,
)
from celery_steps.runtime import Runtime

log = logging.getLogger("celery_steps.tasks")


def install(app: Celery, runtime: Runtime) -> None:
    """Register the internal tasks and the worker bootstep on ``app``."""
    setattr(app, RUNTIME_ATTR, runtime)

    @app.task(name=ROUTE_TASK, shared=False, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def route(event_id: str) -> None:
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
        error = error_dict(exc, traceback=traceback if isinstance(traceback, str) else None)
        runtime.resolve_task_step(run_id, function_id, step_key, {"status": "failed",
                                                                   "error": error})

    app.steps["worker"].add(TimerPollerStep)
    app.steps["worker"].add(ChildHeartbeatStep)
    app.steps["worker"].add(BrokerResilienceStep)  # survive Redis restarts (docs/operations.md)
    add_worker_option(app)

    @task_prerun.connect(weak=False)  # type: ignore[untyped-decorator]
    def note_task_started(sender: Any = None, task_id: str = "", **kwargs: Any) -> None:
        """A ``run_task`` task started: it was published, never send it again."""
        if task_id.startswith(TASK_ID_PREFIX) and getattr(sender, "app", None) is app:
            try:
                runtime.task_started(task_id)
            except Exception:  # only a resend safety net: never fail the user's task
                log.warning("could not record the start of task %s", task_id, exc_info=True)

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
            if fn.crons:
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

    Its ``queue=`` is applied by the :class:`~celery_steps.integration.routing.FunctionQueues`
    router in ``task_routes``, not as a task attribute (deprecated, gone in Celery 6).
    """

    def run_function(run_id: str) -> str:
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
    if fn.crons:
        add_beat_entries(app, fn)
