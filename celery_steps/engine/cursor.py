"""Where a replaying handler is in its steps: the engine's bookkeeping behind ``ctx.step``.

Each step call claims the next position; while positions recorded by earlier executions
remain, the handler replays and each claim must match what was recorded. ``parallel`` rewinds
the cursor to run one branch; the run's log fields read the step running now and its attempt.
"""

from __future__ import annotations

from typing import Any

from celery_steps.engine.interrupts import Stop
from celery_steps.engine.scope import RunScope
from celery_steps.errors import (
    CeleryStepsError,
    NonDeterminismError,
    NonRetriableError,
    RunLimitError,
)

MAX_STEP_ID = 200
Point = tuple[int, dict[str, int]]


class NestedStepError(NonRetriableError):
    """A step tool was called inside another step's function."""


class StepCursor:
    """The position of one execution of a handler in its run's steps."""

    __slots__ = ("_counters", "_order", "_scope", "current", "current_attempt", "pos")

    def __init__(self, scope: RunScope) -> None:
        self._scope = scope
        self._order = [key for key, _ in scope.run.ordered_steps()]
        self._counters: dict[str, int] = {}
        self.pos = 0
        self.current: str | None = None  # the key of the step whose function runs now
        self.current_attempt = 0

    @property
    def replaying(self) -> bool:
        """True while the handler is still passing steps recorded by earlier executions."""
        return self.pos < len(self._order)

    @property
    def step_id(self) -> str | None:
        """The key of the step whose function runs now (None between steps)."""
        return self.current

    @property
    def attempt(self) -> int:
        """0 on the first attempt of the current step (or of the handler body)."""
        return self.current_attempt if self.current is not None else self._scope.run.attempt

    def claim(self, step_id: str, op: str) -> tuple[str, int, dict[str, Any] | None]:
        """Take the next position for ``step_id``: its key, position and recorded state."""
        if self.current is not None:
            raise NestedStepError(
                f"ctx.step.{op}({step_id!r}) was called inside step {self.current!r}: "
                "steps cannot be nested; call it from the handler instead"
            )
        if not isinstance(step_id, str) or not step_id or len(step_id) > MAX_STEP_ID:
            raise NonRetriableError(
                f"step id {step_id!r} is invalid: use a non-empty string of at most "
                f"{MAX_STEP_ID} characters"
            )
        if "|" in step_id:
            raise NonRetriableError(f"step id {step_id!r} must not contain '|'")
        scope = self._scope
        finish = scope.run.deadlines.get("finish")
        if finish is not None and scope.clock.now_ms() >= finish:
            scope.services.cancel(
                scope.run.id, reason=f"run did not finish within timeouts.finish ({op} "
                f"{step_id!r} was next)")
            raise Stop("cancelled")
        n = self._counters.get(step_id, 0)
        self._counters[step_id] = n + 1
        key = step_id if n == 0 else f"{step_id}:{n}"
        pos = self.pos
        self.pos += 1
        steps = scope.run.steps
        if pos < len(self._order):
            recorded = self._order[pos]
            recorded_op = steps[recorded].get("op")
            if recorded != key or recorded_op != op:
                raise fatal(scope,
                    f"step #{pos + 1} of run {scope.run.id!r} was recorded as "
                    f"{recorded!r} ({recorded_op}) but the handler now calls {key!r} ({op}): "
                    "the code changed while the run was in flight. Keep step ids and order "
                    "stable for running runs, or give new logic new step ids"
                )
            return key, pos, steps[recorded]
        if key in steps:
            raise fatal(scope,
                f"step {key!r} of run {scope.run.id!r} was recorded at another position: "
                "the handler's step order changed while the run was in flight"
            )
        most = int(scope.settings.run_max_steps)
        if len(self._order) >= most:
            raise fatal(scope,
                f"run {scope.run.id!r} reached the limit of {most} steps (setting "
                f"steps_run_max_steps) at step {key!r}: split the work over several runs "
                "(e.g. ctx.step.invoke or send_event per batch)", RunLimitError)
        self._order.append(key)
        return key, pos, None

    def checkpoint(self) -> Point:
        """Where the handler is in its steps (``parallel`` rewinds to run one branch)."""
        return self.pos, dict(self._counters)

    def restore(self, point: Point) -> None:
        self.pos, self._counters = point[0], dict(point[1])

    def position_of(self, key: str) -> int:
        return self._order.index(key)


def fatal(scope: RunScope, message: str,
          kind: type[CeleryStepsError] = NonDeterminismError) -> CeleryStepsError:
    """An error the run fails with even if user code catches it."""
    exc = kind(message)
    scope.fatal = exc
    return exc
