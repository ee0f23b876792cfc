"""OpenTelemetry: every execution of a run and every step is a span, and all the spans of a run
(across a real sleep, a worker restart and an invoked child) land in one trace whose root is
the caller's span around ``steps.send``. With the SDK's InMemorySpanExporter, a real
redis-server and in-thread workers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from celery_steps import Context
from tests.conftest import ROOT, wait_until
from tests.integration.apps import redis_app, running_worker


class Switched(SpanProcessor):
    """Passes spans on only while a test listens (the global provider outlives the test)."""

    def __init__(self, inner: SpanProcessor) -> None:
        self.inner, self.on = inner, False

    def on_end(self, span: ReadableSpan) -> None:
        if self.on:
            self.inner.on_end(span)


_EXPORTER = InMemorySpanExporter()
_SWITCH = Switched(SimpleSpanProcessor(_EXPORTER))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The global tracer provider (set once per process) exporting to memory for this test."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(_SWITCH)
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    _SWITCH.on = True
    yield _EXPORTER
    _SWITCH.on = False
    _EXPORTER.clear()


def _named(found: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return sorted((s for s in found if s.name == name), key=lambda s: s.start_time or 0)


def test_all_spans_of_a_run_share_the_callers_trace_across_a_sleep_and_a_restart(
    redis_url: str, spans: InMemorySpanExporter,
) -> None:
    app, steps = redis_app(redis_url)

    @steps.function(id="child", trigger="t/never")
    def child(ctx: Context) -> int:
        return int(ctx.step.run("add", lambda: 41 + 1))

    @steps.function(id="napper", trigger="t/nap")
    def napper(ctx: Context) -> int:
        ctx.step.run("before", lambda: 1)
        ctx.step.sleep("pause", "1s")
        return int(ctx.step.invoke("ask", function=child))

    # given a caller's span around steps.send
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("caller") as caller:
        [event_id] = steps.send("t/nap")
    caller_ctx = caller.get_span_context()

    # when one worker runs it until it sleeps, and another (after a restart) finishes it
    with running_worker(app):
        [run] = steps.runs_for_event(event_id)
        wait_until(lambda: steps.get_run(run.id).status == "sleeping", timeout=20)
    with running_worker(app):
        assert steps.wait_for_run(run.id, timeout=20).output == 42
        [child_run] = steps.list_runs(function_id="child")
        wait_until(lambda: len(_named(list(spans.get_finished_spans()),
                                      "celery_steps.run napper")) >= 3, timeout=10)

    found = list(spans.get_finished_spans())
    ours = [s for s in found if s.name.startswith("celery_steps.")]
    # then every span is in the caller's trace, whose root is the caller's span
    assert {s.context.trace_id for s in ours} == {caller_ctx.trace_id}
    [root] = [s for s in found if s.context.trace_id == caller_ctx.trace_id and s.parent is None]
    assert root.name == "caller"

    # and each execution of the run is a child of the caller's span, with the run's attributes
    executions = _named(ours, "celery_steps.run napper")
    assert len(executions) >= 3  # before the sleep, after it, after the child ended
    for execution in executions:
        assert execution.parent is not None and execution.parent.span_id == caller_ctx.span_id
        assert execution.attributes is not None
        assert execution.attributes["celery_steps.run_id"] == run.id
        assert execution.attributes["celery_steps.function_id"] == "napper"
        assert execution.attributes["celery_steps.attempt"] == 0
    by_id = {s.context.span_id: s for s in ours}

    # and each step is a span inside the execution that ran it
    [before] = _named(ours, "celery_steps.step before")
    assert before.attributes is not None
    assert before.attributes["celery_steps.step_id"] == "before"
    assert before.attributes["celery_steps.attempt"] == 0
    assert before.attributes["celery_steps.run_id"] == run.id
    assert before.parent is not None and by_id[before.parent.span_id] is executions[0]
    assert len(_named(ours, "celery_steps.step pause")) == 2  # went to sleep, woke up

    # and the invoked child's executions are children of the invoke step's span
    asks = _named(ours, "celery_steps.step ask")
    child_executions = _named(ours, "celery_steps.run child")
    assert child_executions
    for execution in child_executions:
        assert execution.attributes is not None
        assert execution.attributes["celery_steps.run_id"] == child_run.id
        assert execution.parent is not None and execution.parent.span_id == asks[0].context.span_id
    [add] = _named(ours, "celery_steps.step add")
    assert add.parent is not None and by_id[add.parent.span_id].name == "celery_steps.run child"


def test_a_run_sent_outside_any_span_gets_a_trace_of_its_own(
    redis_url: str, spans: InMemorySpanExporter,
) -> None:
    app, steps = redis_app(redis_url)

    @steps.function(id="napper", trigger="t/nap", retries=0)
    def napper(ctx: Context) -> None:
        ctx.step.sleep("pause", "1s")
        ctx.step.run("fail", lambda: 1 / 0)

    with running_worker(app):
        [run] = steps.runs_for_event(steps.send("t/nap")[0])
        assert steps.wait_for_run(run.id, timeout=20).status == "failed"
        wait_until(lambda: len(_named(list(spans.get_finished_spans()),
                                      "celery_steps.run napper")) == 2, timeout=10)

    ours = [s for s in spans.get_finished_spans() if s.name.startswith("celery_steps.")]
    [start] = [s for s in ours if s.name == "celery_steps.start napper"]
    assert start.parent is None
    assert {s.context.trace_id for s in ours} == {start.context.trace_id}
    last = _named(ours, "celery_steps.run napper")[-1]
    assert last.status.status_code == trace.StatusCode.ERROR
    assert last.attributes is not None and last.attributes["celery_steps.outcome"] == "failed"
    [failed_step] = _named(ours, "celery_steps.step fail")
    assert failed_step.status.status_code == trace.StatusCode.ERROR
    assert any(e.name == "exception" for e in failed_step.events)


def test_without_opentelemetry_nothing_imports_it() -> None:
    # given a process where opentelemetry cannot be imported (as when it is not installed)
    script = textwrap.dedent("""
        import sys
        sys.modules["opentelemetry"] = None  # import fails, as if not installed
        from celery_steps import Context
        from celery_steps.testing import eager_steps
        steps = eager_steps()

        @steps.function(id="f", trigger="t/f")
        def f(ctx: Context) -> int:
            return ctx.step.run("one", lambda: 1)

        [run] = steps.runs_for_event(steps.send("t/f")[0])
        assert steps.get_run(run.id).status == "completed"
        loaded = [m for m, v in sys.modules.items() if m.startswith("opentelemetry") and v]
        assert loaded == [], loaded
        print("ok")
    """)

    # when a run executes there
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)

    # then it completes, and no opentelemetry module was loaded
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


