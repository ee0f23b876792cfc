"""``ctx.step.parallel``: branches run as separate tasks; the parent resumes when all end."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery_steps.engine.interrupts import Planned, Suspend
from celery_steps.errors import NonRetriableError
from celery_steps.store.base import FINAL, Suspension

if TYPE_CHECKING:
    from celery_steps.engine.executor import RunScope
    from celery_steps.engine.steps import StepTools
    from celery_steps.extension import CelerySteps


def run_parallel(steps: CelerySteps, scope: RunScope, tools: StepTools,
                 callables: tuple[Callable[[], Any], ...]) -> tuple[Any, ...]:
    """Plan each branch's step key, dispatch the missing ones, or return all results."""
    if not all(callable(c) for c in callables):
        raise NonRetriableError("ctx.step.parallel takes a tuple of zero-argument callables")
    keys: list[str] = []
    results: list[Any] = []
    pending: list[str] = []
    planning, scope.planning = scope.planning, True
    try:
        for branch in callables:
            try:
                results.append(branch())
                keys.append("")  # already final: returned its stored result
            except Planned as planned:
                keys.append(planned.step_id)
                results.append(None)
                pending.append(planned.step_id)
    finally:
        scope.planning = planning
    if not pending:
        return tuple(results)
    if scope.branch is not None:
        if scope.branch in pending:
            callables[keys.index(scope.branch)]()
        raise Suspend(Suspension("waiting", None))
    now = steps.clock.now_ms()
    fn_id, run_id = scope.function.id, scope.run.id
    for key in pending:
        state = scope.run.steps.get(key)
        if state is None:
            position = scope.run.steps  # record the branch so positions stay stable
            position[key] = {"op": "run", "pos": tools._order.index(key), "status": "queued",
                             "started_at": now, "attempts": 0}
            scope.store.save_step(run_id, scope.token, key, position[key])
        if state is None or state.get("status") not in FINAL:
            due = int(state.get("wake_at", now)) if state else now
            scope.store.schedule(f"b|{fn_id}|{run_id}|{key}", due)
    raise Suspend(Suspension("waiting", None))
