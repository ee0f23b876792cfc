"""Traces of runs and steps with OpenTelemetry, when ``opentelemetry-api`` is installed
(``pip install 'celery-steps[otel]'``) and a tracer provider is configured; else nothing.

The hook surface the rest of the package calls:

- :func:`current_traceparent`: the W3C ``traceparent`` of the span current here (an
  :class:`~celery_steps.events.Event` records it where it is made, e.g. in ``steps.send``);
- :func:`run_trace`: a new run's trace context, stored with the run: its first event's, or a
  new trace started for the run;
- :func:`start_execution`: a span for one execution of a run, a child of the run's trace
  context, current while the handler runs; its :meth:`ExecutionTrace.step` makes the span of a
  step.

Without OpenTelemetry, nothing here imports it and every hook returns ``None`` at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.util import find_spec
from typing import Any, Protocol


class StepTrace(Protocol):
    """The span of one step (one attempt of a ``step.run``)."""

    def end(self, error: BaseException | None = None) -> None: ...


class ExecutionTrace(Protocol):
    """The span of one execution of a run."""

    def step(self, step_id: str, op: str, attempt: int) -> StepTrace: ...
    def end(self, outcome: str, error: BaseException | None = None) -> None: ...


class _Backend(Protocol):
    def current_traceparent(self) -> str | None: ...
    def run_trace(self, function_id: str, run_id: str) -> str | None: ...
    def start_execution(self, function_id: str, run_id: str, attempt: int,
                        traceparent: str | None) -> ExecutionTrace | None: ...


_available = find_spec("opentelemetry") is not None  # looks, imports nothing
_backend: _Backend | None = None


def _get() -> _Backend | None:
    global _available, _backend
    if _backend is None and _available:
        try:
            from celery_steps.telemetry import otel
        except ImportError:  # a namespace without the API (another opentelemetry package)
            _available = False
            return None
        _backend = otel.Backend()
    return _backend


def current_traceparent() -> str | None:
    """The ``traceparent`` of the current span, or None (no span, or no OpenTelemetry)."""
    backend = _get() if _available else None
    return None if backend is None else backend.current_traceparent()


def run_trace(function_id: str, run_id: str,
              events: Sequence[Mapping[str, Any]]) -> str | None:
    """The trace context of a new run: its first event's, else a new trace started for it."""
    if not _available:
        return None
    first = events[0].get("traceparent") if events else None
    if isinstance(first, str) and first:
        return first
    backend = _get()
    return None if backend is None else backend.run_trace(function_id, run_id)


def start_execution(function_id: str, run_id: str, attempt: int,
                    traceparent: str | None) -> ExecutionTrace | None:
    """Start the span of one execution (current until it ends); None when not tracing."""
    backend = _get() if _available else None
    if backend is None:
        return None
    return backend.start_execution(function_id, run_id, attempt, traceparent)
