"""Public errors. Every one derives from :class:`CeleryStepsError`.

Messages say what was wrong and how to fix it. Control-flow interrupts are not here: they
live in :mod:`celery_steps.engine.interrupts` and derive from ``BaseException``.
"""

from __future__ import annotations

import traceback as tb
from datetime import datetime, timedelta, timezone
from typing import Any

# How much of a traceback is stored with a failed step or run: its end (the innermost frames
# and the error), in characters; the cut is marked at the top.
TRACEBACK_MAX_CHARS = 8192
MESSAGE_MAX_CHARS = 4000


class CeleryStepsError(Exception):
    """Base class of every error celery-steps raises on purpose."""


class ConfigurationError(CeleryStepsError):
    """The extension, a function or an option is configured wrongly."""


class StoreEvictionError(ConfigurationError):
    """The Redis store evicts keys (its ``maxmemory-policy`` is not ``noeviction``): nothing is
    written until it stops, so no run state can vanish half written."""


class InvalidEventError(CeleryStepsError):
    """An event was rejected before anything was stored or started."""


class RunNotFound(CeleryStepsError):
    """No run with that id exists (or it expired after the retention period)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"no run with id {run_id!r}: check the id (`celery -A proj steps runs` lists runs); "
            "ended runs expire after steps_run_retention seconds"
        )
        self.run_id = run_id


class EventNotFound(CeleryStepsError):
    """No event with that id was accepted in the dedupe window (24 hours by default)."""

    def __init__(self, event_id: str) -> None:
        super().__init__(
            f"no event with id {event_id!r}: check the id; events are kept for "
            "steps_event_dedupe_window seconds after they are sent"
        )
        self.event_id = event_id


class SerializationError(CeleryStepsError):
    """A value that must be stored is not JSON-serializable. Never retried."""


class NonDeterminismError(CeleryStepsError):
    """A replay met steps that differ from what the run recorded (the code changed)."""


class NonRetriableError(CeleryStepsError):
    """Raise from a step (or the handler) to fail it at once, without further attempts."""


class RetryAfterError(CeleryStepsError):
    """Raise to retry the step no sooner than ``retry_after`` (seconds, timedelta or datetime)."""

    def __init__(self, message: str, retry_after: float | timedelta | datetime) -> None:
        super().__init__(message)
        if isinstance(retry_after, datetime) and retry_after.tzinfo is None:
            raise ConfigurationError(
                "RetryAfterError got a naive datetime: pass an aware one, "
                "e.g. datetime.now(timezone.utc) + timedelta(minutes=5)"
            )
        self.retry_after = retry_after

    def delay_seconds(self, now: datetime) -> float:
        """Seconds from ``now`` until the next attempt may run (never negative)."""
        value = self.retry_after
        if isinstance(value, datetime):
            seconds = (value - now.astimezone(timezone.utc)).total_seconds()
        elif isinstance(value, timedelta):
            seconds = value.total_seconds()
        else:
            seconds = float(value)
        return max(0.0, seconds)


class RunLimitError(NonRetriableError):
    """A run went past a limit on runs (steps per run, stored state per run); it fails for
    good, even if the handler catches this."""


class WorkerLostError(CeleryStepsError):
    """The worker process executing a step (or the handler) died: killed, out of memory, a
    hard time limit, ``os._exit``. Each death counts as a failed attempt."""


class StepError(CeleryStepsError):
    """A step failed for good. Raised where the handler called the step, on every replay."""

    def __init__(self, step_id: str, name: str, message: str) -> None:
        super().__init__(f"step {step_id!r} failed: {name}: {message}")
        self.step_id = step_id
        self.name = name
        self.message = message


class StepSerializationError(StepError, SerializationError):
    """A step whose result could not be stored; catchable as either parent class."""


class StepTimeoutError(StepError):
    """A step (``invoke``, ``run_task``) did not complete within its timeout."""


class StepCancelledError(StepError):
    """A step waited on another run that was cancelled."""


class RunFailedError(CeleryStepsError):
    """A run failed for good. Raised from the Celery task execution that ended the run, so
    the task ends in ``FAILURE`` and the tools that watch Celery tasks see it.

    ``error`` is the run's stored error: ``name``, ``message`` and, when a Python exception
    caused it, ``traceback``.
    """

    def __init__(self, run_id: str, function_id: str, error: dict[str, str]) -> None:
        super().__init__(
            f"run {run_id} of {function_id!r} failed: {error.get('name', 'Error')}: "
            f"{error.get('message', '')} (see `celery -A proj steps show {run_id}`)"
        )
        self.run_id = run_id
        self.function_id = function_id
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:  # pickled between a pool child and the worker
        return (type(self), (self.run_id, self.function_id, self.error))


def error_dict(exc: BaseException, *, traceback: str | None = None) -> dict[str, str]:
    """How an error is stored on a step or run: its class name, (capped) message and, for an
    exception that was raised, its traceback (the end of it: :data:`TRACEBACK_MAX_CHARS`).

    ``traceback`` is a traceback already formatted elsewhere (a Celery task's), used when
    ``exc`` carries none.
    """
    error = {"name": type(exc).__name__, "message": str(exc)[:MESSAGE_MAX_CHARS]}
    text = traceback
    if exc.__traceback__ is not None:
        text = "".join(tb.format_exception(exc))
    if text:
        error["traceback"] = cap_traceback(text)
    return error


def cap_traceback(text: str) -> str:
    """``text`` cut to its last :data:`TRACEBACK_MAX_CHARS` characters, the cut marked."""
    if len(text) <= TRACEBACK_MAX_CHARS:
        return text
    marker = "... ({} characters cut)\n"
    keep = TRACEBACK_MAX_CHARS - len(marker.format(len(text)))
    return marker.format(len(text) - keep) + text[-keep:]


def step_error_for(step_id: str, name: str, message: str) -> StepError:
    """The StepError subclass matching a stored error name."""
    classes: dict[str, type[StepError]] = {
        "SerializationError": StepSerializationError,
        "StepTimeoutError": StepTimeoutError,
    }
    return classes.get(name, StepError)(step_id, name, message)
