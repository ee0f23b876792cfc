"""What one execution of a handler works with, and the services the engine needs from above.

The runtime implements :class:`Services`; the engine never imports the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from celery_steps.clock import Clock
from celery_steps.engine.backoff import backoff_seconds
from celery_steps.engine.interrupts import Stop
from celery_steps.errors import CeleryStepsError, RetryAfterError
from celery_steps.functions import Function
from celery_steps.settings import Settings
from celery_steps.store.base import RESUME_SAFETY_MS, Outcome, RunRecord, StateStore
from celery_steps.telemetry import ExecutionTrace


class Services(Protocol):
    """What the engine asks of the runtime (which implements it)."""

    def send_step_events(self, events: Any, seed: str) -> list[str]: ...
    def start_child(self, parent: RunRecord, function: Any, data: Any, step_key: str) -> str: ...
    def send_task_step(self, run: RunRecord, task: Any, args: Any, kwargs: Any,
                       step_key: str) -> str: ...
    def task_outcome(self, task_id: str) -> dict[str, Any] | None: ...
    def send_branch(self, function_id: str, run_id: str, step_key: str) -> None: ...
    def notify_end(self, function: Function, run: RunRecord, outcome: Outcome) -> None: ...
    def enqueue(self, function_id: str, run_id: str) -> None: ...
    def cancel(self, run_id: str, *, reason: str = ...) -> None: ...


@dataclass
class RunScope:
    """Everything one execution of a handler works with."""

    store: StateStore
    clock: Clock
    settings: Settings
    function: Function
    run: RunRecord
    holder: str
    services: Services
    planning: bool = False
    branch: str | None = None
    fatal: CeleryStepsError | None = None
    # Deaths of the process that ran this run (or branch) since its last progress, not yet
    # charged to a step's attempts.
    crashes: int = 0
    # What the run's state takes in the store so far (checked against steps_run_max_state_bytes)
    state_bytes: int = 0
    # This execution's span, when tracing (celery_steps.telemetry).
    trace: ExecutionTrace | None = None
    # run id -> (step key, since ms) of the step.run executing now, which the process's
    # heartbeat writes to the run (see engine.liveness); None for a parallel branch.
    running: dict[str, tuple[str, int]] | None = None

    def retry_delay_ms(self, attempts: int, exc: BaseException) -> int:
        if isinstance(exc, RetryAfterError):
            seconds = exc.delay_seconds(self.clock.now())
        else:
            seconds = backoff_seconds(
                attempts,
                base=float(self.settings.retry_backoff_base),
                cap=float(self.settings.retry_backoff_max),
            )
        return int(seconds * 1000)

    def child_outcome(self, child_id: str) -> dict[str, Any] | None:
        child = self.store.load_run(child_id)
        if child is None:
            return {"status": "failed", "error": {
                "name": "RunNotFound", "message": f"invoked run {child_id} no longer exists"}}
        if child.status == "completed":
            return {"status": "completed", "result": child.output}
        if child.status in ("failed", "cancelled"):
            return {"status": "failed", "error": child.error or {
                "name": "Cancelled", "message": f"invoked run {child_id} was {child.status}"}}
        return None

    def save_branch(self, key: str, state: dict[str, Any]) -> dict[str, Any]:
        """A parallel branch has no lease: write first-writer-wins and wake the parent."""
        store = self.store
        wake_at = self.clock.now_ms() + RESUME_SAFETY_MS  # the parent is also enqueued below
        if not store.resolve_step(self.run.id, key, state, wake_at=wake_at):
            fresh = store.load_run(self.run.id)
            if fresh is None or key not in fresh.steps:
                raise Stop("run gone")
            state = fresh.steps[key]
        self.run.steps[key] = state
        self.services.enqueue(self.function.id, self.run.id)
        return state
