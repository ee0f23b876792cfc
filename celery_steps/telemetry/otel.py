"""The OpenTelemetry side of :mod:`celery_steps.telemetry`, imported only when it is installed.

Spans come from the global tracer provider; while none is configured (the API's proxy),
nothing is traced. Trace contexts travel as W3C ``traceparent`` strings.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SPAN_RUN = "celery_steps.run"  # one execution of a run: "celery_steps.run <function id>"
SPAN_STEP = "celery_steps.step"  # one step (attempt): "celery_steps.step <step id>"
SPAN_START = "celery_steps.start"  # the root of a run's trace when no span led to the run
RUN_ID = "celery_steps.run_id"
FUNCTION_ID = "celery_steps.function_id"
STEP_ID = "celery_steps.step_id"
ATTEMPT = "celery_steps.attempt"
OP = "celery_steps.op"
OUTCOME = "celery_steps.outcome"
_propagator = TraceContextTextMapPropagator()


def _version() -> str | None:
    try:
        return version("celery-steps")
    except PackageNotFoundError:
        return None


def _ended(span: trace.Span, error: BaseException | None) -> None:
    """End ``span``; an exception (not an engine interrupt) marks it as an error."""
    if isinstance(error, Exception):
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:1000]))
    span.end()


class _Step:
    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self._token = otel_context.attach(trace.set_span_in_context(span))

    def end(self, error: BaseException | None = None) -> None:
        otel_context.detach(self._token)
        _ended(self._span, error)


class _Execution:
    def __init__(self, tracer: trace.Tracer, span: trace.Span, run_id: str,
                 function_id: str) -> None:
        self._tracer, self._span = tracer, span
        self._run_id, self._function_id = run_id, function_id
        self._token = otel_context.attach(trace.set_span_in_context(span))

    def step(self, step_id: str, op: str, attempt: int) -> _Step:
        return _Step(self._tracer.start_span(f"{SPAN_STEP} {step_id}", attributes={
            RUN_ID: self._run_id, FUNCTION_ID: self._function_id, STEP_ID: step_id,
            ATTEMPT: attempt, OP: op}))

    def end(self, outcome: str, error: BaseException | None = None) -> None:
        otel_context.detach(self._token)
        self._span.set_attribute(OUTCOME, outcome)
        _ended(self._span, error)


class Backend:
    """Makes the spans, from the global tracer provider of the moment."""

    def __init__(self) -> None:
        self._provider: trace.TracerProvider | None = None
        self._tracer: trace.Tracer | None = None

    def tracer(self) -> trace.Tracer | None:
        """The tracer, or None while no tracer provider is configured."""
        provider = trace.get_tracer_provider()
        if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
            return None
        if provider is not self._provider:
            self._provider = provider
            self._tracer = provider.get_tracer("celery_steps", _version())
        return self._tracer

    def current_traceparent(self) -> str | None:
        carrier: dict[str, str] = {}
        _propagator.inject(carrier)
        return carrier.get("traceparent")

    def run_trace(self, function_id: str, run_id: str) -> str | None:
        """A new run that no span led to starts a trace of its own, with this span as root."""
        tracer = self.tracer()
        if tracer is None:
            return None
        span = tracer.start_span(f"{SPAN_START} {function_id}",
                                 attributes={RUN_ID: run_id, FUNCTION_ID: function_id})
        carrier: dict[str, str] = {}
        _propagator.inject(carrier, context=trace.set_span_in_context(span))
        span.end()
        return carrier.get("traceparent")

    def start_execution(self, function_id: str, run_id: str, attempt: int,
                        traceparent: str | None) -> _Execution | None:
        tracer = self.tracer()
        if tracer is None:
            return None
        parent = None
        links = []
        if traceparent:
            parent = _propagator.extract({"traceparent": traceparent})
            here = trace.get_current_span().get_span_context()
            if here.is_valid:  # e.g. the Celery task's own span, from its instrumentation
                links.append(Link(here))
        span = tracer.start_span(f"{SPAN_RUN} {function_id}", context=parent, links=links,
                                 kind=trace.SpanKind.CONSUMER, attributes={
                                     RUN_ID: run_id, FUNCTION_ID: function_id,
                                     ATTEMPT: attempt})
        return _Execution(tracer, span, run_id, function_id)
