"""Test helpers: run functions in-process on the memory store with a fake clock.

``run_function(fn, data=...)`` executes a declared function start to end without a broker or
Redis: sleeps finish by jumping a :class:`~celery_steps.clock.FakeClock` (a 7-day sleep takes
milliseconds), ``wait_for_event`` steps get the events you stub by step id (or time out), and
the result lists every step taken::

    from celery_steps.testing import run_function

    result = run_function(process_order, data={"order_id": 7},
                          waits={"wait-for-shipment": {"name": "shop/shipped", "data": {}}})
    assert result.status == "completed"
    assert [s.id for s in result.steps] == ["charge", "wait-for-shipment", "email"]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from celery import Celery

from celery_steps.clock import FakeClock
from celery_steps.events import Event
from celery_steps.extension import CelerySteps
from celery_steps.functions import Function
from celery_steps.integration import register_function
from celery_steps.runs import Run, StepRecord
from celery_steps.runtime import Runtime
from celery_steps.runtime.timers import poll_once


@dataclass
class TestResult:
    """What a run did: its final :class:`Run`, and shortcuts to the parts tests check."""

    __test__ = False  # not a pytest test class
    run: Run
    steps_app: CelerySteps
    clock: FakeClock

    @property
    def status(self) -> str:
        return self.run.status

    @property
    def output(self) -> Any:
        return self.run.output

    @property
    def error(self) -> dict[str, str] | None:
        return self.run.error

    @property
    def steps(self) -> list[StepRecord]:
        return self.run.steps


def eager_steps(clock: FakeClock | None = None, **conf: Any) -> CelerySteps:
    """A CelerySteps on a fresh eager Celery app with the memory store and a fake clock."""
    app = Celery(f"celery_steps_test_{id(clock)}", set_as_current=False)
    app.conf.update(task_always_eager=True, steps_store_url="memory://",
                    steps_timer_poller=False, **conf)
    return CelerySteps(app, clock=clock or FakeClock())


def fire_timers(steps: CelerySteps) -> int:
    """Fire every timer due now on ``steps.clock`` (sleeps, retries, timeouts, delayed
    events); returns how many fired. Use after ``clock.advance(...)``."""
    return poll_once(steps.runtime)


def settle(steps: CelerySteps, run_id: str, *, max_jumps: int = 1000,
           waits: Mapping[str, Any] | None = None) -> Run:
    """Drive a run to its end: jump the fake clock to each due timer and fire it."""
    clock = steps.clock
    assert isinstance(clock, FakeClock), "settle() needs a CelerySteps with a FakeClock"
    runtime = steps.runtime
    for _ in range(max_jumps):
        poll_once(runtime)
        # stubs are delivered the moment a wait is reached, before time jumps to its timeout
        while waits and _deliver_stubs(steps, run_id, waits):
            poll_once(runtime)
        run = steps.get_run(run_id)
        if run.ended:
            return run
        due = runtime.store.next_due()
        if due is None:
            return run
        if due > clock.now_ms():
            clock.advance(timedelta(milliseconds=due - clock.now_ms()))
    return steps.get_run(run_id)


def _deliver_stubs(steps: CelerySteps, run_id: str, waits: Mapping[str, Any]) -> bool:
    """Resolve every reached wait that has a stub; True when one was delivered."""
    runtime = steps.runtime
    record = runtime.store.load_run(run_id)
    if record is None:
        return False
    delivered = False
    for key, state in record.steps.items():
        if state.get("op") == "wait_for_event" and state.get("status") == "waiting":
            if key not in waits:
                continue
            stub = waits[key]
            result = None
            if stub is not None:
                event = _as_event(stub)
                if "ts" not in event.model_fields_set:
                    event = event.model_copy(update={"ts": steps.clock.now_ms()})
                result = event.model_dump()
            update = {"status": "completed", "result": result, "ended_at": steps.clock.now_ms()}
            if runtime.resolve_and_wake(run_id, record.function_id, key, update):
                delivered = True
    return delivered


def _as_event(stub: Any) -> Event:
    return stub if isinstance(stub, Event) else Event.model_validate(dict(stub))


def run_function(
    fn: Function,
    data: Mapping[str, Any] | None = None,
    *,
    event: Event | Mapping[str, Any] | None = None,
    waits: Mapping[str, Event | Mapping[str, Any] | None] | None = None,
    clock: FakeClock | None = None,
    **conf: Any,
) -> TestResult:
    """Run ``fn``'s handler to the end in-process; see the module docstring."""
    steps = eager_steps(clock, steps_retry_backoff_base=0.001, **conf)
    runtime = steps.runtime

    # every function of fn's app comes along, so ctx.step.invoke of a sibling works
    origin = fn._starter
    siblings = list(origin.registry.by_id.values()) if isinstance(origin, Runtime) else []
    copy = replace(fn, _on_failure=None, _starter=runtime)
    for item in [copy, *(s for s in siblings if s.id != fn.id and not s._internal)]:
        clone = item if item is copy else replace(item, _on_failure=None, _starter=runtime)
        runtime.register(clone)
        register_function(steps.app, runtime, clone)
    trigger = _as_event(event) if event is not None else Event(
        name=next((t.event for t in copy._event_triggers()), "test/run"), data=dict(data or {}))
    if "ts" not in trigger.model_fields_set:
        trigger = trigger.model_copy(update={"ts": steps.clock.now_ms()})
    run_id = f"test-{trigger.id}"
    runtime.create_and_enqueue(copy, run_id, [trigger.model_dump()])
    run = settle(steps, run_id, waits=waits)
    assert isinstance(steps.clock, FakeClock)
    return TestResult(run, steps, steps.clock)
