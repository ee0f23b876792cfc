"""``ctx.step.parallel``: branches run as separate tasks on any worker.

The parent plans each branch (calls it with ``step.run`` answering "plan" instead of running),
records the branch steps at their positions, sends one branch task per branch
and suspends. A branch task replays the handler up to ``parallel``, runs only its own step and
writes it first-writer-wins without the parent's lease, then wakes the parent. The parent
resumes when every branch step is final (no chord: the stored step states are the counter);
a branch whose task was lost is sent again after ``steps_lease_ttl`` x 4.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery_steps.engine.cursor import StepCursor
from celery_steps.engine.interrupts import BranchDone, Planned, Suspend
from celery_steps.engine.scope import RunScope
from celery_steps.errors import NonRetriableError
from celery_steps.store.base import FINAL, Suspension


def run_parallel(scope: RunScope, cursor: StepCursor,
                 callables: tuple[Callable[[], Any], ...]) -> tuple[Any, ...]:
    """Return every branch's result, or dispatch the unfinished branches and suspend."""
    if not all(callable(c) for c in callables):
        raise NonRetriableError("ctx.step.parallel takes a tuple of zero-argument callables")
    results: list[Any] = []
    pending: dict[str, tuple[int, Callable[[], Any], Any]] = {}
    planning, scope.planning = scope.planning, True
    try:
        for branch in callables:
            before = cursor.checkpoint()
            try:
                results.append(branch())
            except Planned as planned:
                results.append(None)
                pending[planned.step_id] = (len(results) - 1, branch, before)
    finally:
        scope.planning = planning
    if not pending:
        return tuple(results)
    if scope.branch is not None:
        _run_own_branch(scope, cursor, pending)
    _dispatch(scope, cursor, pending)
    raise AssertionError("unreachable")  # pragma: no cover


def _run_own_branch(scope: RunScope, cursor: StepCursor,
                    pending: dict[str, tuple[int, Callable[[], Any], Any]]) -> None:
    entry = pending.get(scope.branch or "")
    if entry is not None:
        _, branch, before = entry
        cursor.restore(before)
        branch()
    raise BranchDone(scope.branch or "")


def _dispatch(scope: RunScope, cursor: StepCursor,
              pending: dict[str, tuple[int, Callable[[], Any], Any]]) -> None:
    now = scope.clock.now_ms()
    redispatch = int(float(scope.settings.lease_ttl) * 4000)
    wake_at = now + redispatch
    for key in pending:
        state = scope.run.steps.get(key)
        if state is not None and state.get("status") in FINAL:
            continue
        retry_at = int(state.get("wake_at", 0)) if state else 0
        sent_at = int(state.get("dispatched_at", 0)) if state else 0
        if retry_at > now:
            wake_at = min(wake_at, retry_at)
            continue
        if state is not None and sent_at > retry_at and sent_at + redispatch > now:
            continue  # sent recently and not failed since: still on its way or running
        fresh = {"op": "run", "pos": cursor.position_of(key), "status": "queued",
                 "attempts": 0, "started_at": now, **(state or {}), "dispatched_at": now}
        scope.save_step(key, fresh)
        scope.services.send_branch(scope.function.id, scope.run.id, key)
    raise Suspend(Suspension("waiting", wake_at))
