"""Celery tasks: one per function, plus routing, parallel branches, crons and task steps."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from celery import Task

from celery_steps.engine.steps import task_run_id
from celery_steps.errors import ConfigurationError, error_dict

if TYPE_CHECKING:
    from celery_steps.extension import CelerySteps
    from celery_steps.functions import Function
    from celery_steps.store.base import RunRecord

log = logging.getLogger("celery_steps.tasks")

ROUTE_TASK = "celery_steps.route"
BRANCH_TASK = "celery_steps.branch"
CRON_TASK = "celery_steps.cron"
TASK_DONE = "celery_steps.task_done"
TASK_FAILED = "celery_steps.task_failed"


def install(steps: CelerySteps) -> None:
    """Register the internal tasks and the worker bootstep on ``steps.app``."""
    app = steps.app

    @app.task(name=ROUTE_TASK, shared=False, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def route(event_id: str) -> None:
        steps.route(event_id)

    @app.task(name=BRANCH_TASK, shared=False, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
    def branch(function_id: str, run_id: str, step_key: str) -> None:
        steps.execute(function_id, run_id, branch=step_key)

    @app.task(name=CRON_TASK, shared=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def cron(function_id: str, index: int = 0) -> None:
        from celery_steps.integration.crons import fire_cron

        fire_cron(steps, function_id, index)

    @app.task(name=TASK_DONE, shared=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def task_done(result: Any, run_id: str, function_id: str, step_key: str) -> None:
        steps.resolve_task_step(run_id, function_id, step_key, {"status": "completed",
                                                                 "result": result})

    @app.task(name=TASK_FAILED, shared=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def task_failed(request: Any, exc: Any, traceback: Any, run_id: str, function_id: str,
                    step_key: str) -> None:
        steps.resolve_task_step(run_id, function_id, step_key, {"status": "failed",
                                                                 "error": error_dict(exc)})

    from celery_steps.integration.bootstep import TimerPollerStep, add_worker_option
    from celery_steps.integration.resilience import BrokerResilienceStep

    app.steps["worker"].add(TimerPollerStep)
    app.steps["worker"].add(BrokerResilienceStep)  # survive Redis restarts (docs/operations.md)
    add_worker_option(app)

    @app.on_after_finalize.connect(weak=False)  # type: ignore[untyped-decorator]
    def keep_beat_entries(sender: Any, **kwargs: Any) -> None:
        """Re-add cron entries in case configuration replaced ``beat_schedule``."""
        from celery_steps.integration.crons import add_beat_entries

        for fn in list(steps.registry.by_id.values()):
            if fn.crons:
                add_beat_entries(steps, fn)


def register_function(steps: CelerySteps, fn: Function) -> None:
    """Make ``fn`` a Celery task named ``celery_steps.fn.<id>`` (acks late: never lost)."""

    def run_function(run_id: str) -> str:
        return steps.execute(fn.id, run_id)

    run_function.__qualname__ = f"run_function[{fn.id}]"
    options: dict[str, Any] = {
        "name": fn.task_name,
        "acks_late": True,
        "reject_on_worker_lost": True,
        "ignore_result": True,
        "base": Task,
        "shared": False,
    }
    if fn.queue:
        options["queue"] = fn.queue
    steps.app.task(**options)(run_function)
    if fn.crons:
        from celery_steps.integration.crons import add_beat_entries

        add_beat_entries(steps, fn)


def send_task_step(steps: CelerySteps, run: RunRecord, task: Any, args: Any, kwargs: Any,
                   step_key: str) -> str:
    """Send a plain Celery task whose result resumes the run (``ctx.step.run_task``)."""
    if isinstance(task, str):
        task = steps.app.tasks.get(task) or steps.app.signature(task)
    if not hasattr(task, "apply_async"):
        raise ConfigurationError(f"run_task needs a Celery task, got {type(task).__name__}")
    task_id = task_run_id(run.id, step_key)
    link_args = (run.id, run.function_id, step_key)
    done = steps.app.signature(TASK_DONE, args=link_args, immutable=False)
    failed = steps.app.signature(TASK_FAILED, args=link_args)
    task.apply_async(args=list(args), kwargs=dict(kwargs), task_id=task_id, link=done,
                     link_error=failed)
    return task_id
