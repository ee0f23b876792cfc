"""Log records of a run: the run's fields on every record, and ``ctx.logger``.

While a run executes, :data:`current` holds its :class:`RunLog`; :class:`RunLogFilter`, on the
engine's loggers (and on any handler you add it to), copies ``run_id``, ``function_id``,
``step_id`` (``None`` outside a step) and ``attempt`` onto each record, so JSON formatters and
error trackers pick them up. A record that already has one of them (``extra=``) keeps it.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any, Protocol

FIELDS = ("run_id", "function_id", "step_id", "attempt")
# The engine's loggers (and the runtime's, which log about runs while one executes).
RUN_LOGGERS = ("celery_steps", "celery_steps.executor", "celery_steps.steps",
               "celery_steps.run", "celery_steps.routing", "celery_steps.flow",
               "celery_steps.tasks", "celery_steps.store")


class StepPosition(Protocol):
    """Where a replaying handler is: the step running now and its attempt."""

    @property
    def replaying(self) -> bool: ...

    @property
    def step_id(self) -> str | None: ...

    @property
    def attempt(self) -> int: ...


class RunLog:
    """The log fields of one execution of a run."""

    __slots__ = ("attempt", "function_id", "run_id", "steps")

    def __init__(self, run_id: str, function_id: str, attempt: int = 0) -> None:
        self.run_id = run_id
        self.function_id = function_id
        self.attempt = attempt
        self.steps: StepPosition | None = None  # set once the handler replays

    def fields(self) -> dict[str, Any]:
        steps = self.steps
        if steps is None:
            return {"run_id": self.run_id, "function_id": self.function_id, "step_id": None,
                    "attempt": self.attempt}
        return {"run_id": self.run_id, "function_id": self.function_id,
                "step_id": steps.step_id, "attempt": steps.attempt}


current: ContextVar[RunLog | None] = ContextVar("celery_steps_run_log", default=None)


class RunLogFilter(logging.Filter):
    """Adds the executing run's fields to each record (``None`` outside an execution).

    On the engine's loggers already; add it to a handler of yours to tag every record logged
    while a run executes, your own loggers' and Celery's included.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        run = current.get()
        if run is None:
            for name in FIELDS:
                if not hasattr(record, name):
                    setattr(record, name, None)
            return True
        for name, value in run.fields().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


_filter = RunLogFilter()


def install_filter() -> None:
    """Put the filter on the engine's loggers (once)."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if _filter not in logger.filters:
            logger.addFilter(_filter)


class ReplayAwareLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """``ctx.logger``: quiet while the handler replays steps it already passed; each record
    carries the run's fields (also when it is used from another thread), and ``extra=``
    passes through (its keys win)."""

    def __init__(self, logger: logging.Logger, run: RunLog) -> None:
        super().__init__(logger, {"run_id": run.run_id})
        self._run = run

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        steps = self._run.steps
        if steps is None or not steps.replaying:
            super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**self._run.fields(), **(kwargs.get("extra") or {})}
        return f"[run {self._run.run_id}] {msg}", kwargs
