"""Building a new run: its id, start watchdog, Timeouts deadlines, cancel_on waiters, gates."""

from __future__ import annotations

from typing import Any

from celery_steps.durations import parse_duration, to_ms
from celery_steps.engine.steps import derived_id
from celery_steps.expressions import match_key_at
from celery_steps.functions import Function
from celery_steps.runtime.gates import concurrency_gates, priority_ms, throttle_gate
from celery_steps.settings import Settings
from celery_steps.store.base import NewRun, Waiter
from celery_steps.telemetry import run_trace


def run_id_for(function_id: str, event_id: str) -> str:
    """Event-started runs get a derived id, so routing an event twice starts one run."""
    return "run_" + derived_id(function_id, event_id)


def new_run(now: int, settings: Settings, fn: Function, run_id: str,
            events: list[dict[str, Any]], parent: dict[str, Any] | None = None,
            start_in_ms: int = 0, pending: str | None = None) -> NewRun:
    """A run record: its start watchdog (or delayed start), Timeouts deadlines, cancel_on
    registrations, flow-control gates, priority (over its first event) and trace context."""
    start_by = now + int(float(settings.start_watchdog) * 1000)
    if start_in_ms > 0:
        start_by = now + start_in_ms
    deadlines: dict[str, int] = {}
    if fn.timeouts is not None:
        for name in ("start", "finish"):
            value = getattr(fn.timeouts, name)
            if value is not None:
                deadlines[name] = now + to_ms(parse_duration(value))
        start_by = min(start_by, deadlines.get("start", start_by))
    trigger = events[0] if events else {}
    waiters = tuple(
        Waiter(
            event_name=f"cancel:{c.option.event}",
            run_id=run_id,
            function_id=fn.id,
            step_key=f"cancel_on:{index}",
            match_path=c.option.match,
            match_key=match_key_at(trigger, c.option.match) if c.option.match else None,
            condition=c.option.if_exp,
            timeout_ms=None if c.timeout is None else to_ms(c.timeout),
        )
        for index, c in enumerate(fn.cancel_on)
    )
    return NewRun(
        id=run_id,
        function_id=fn.id,
        event_ids=[e["id"] for e in events],
        created_at=now,
        events=events,
        parent=parent,
        start_by=start_by,
        waiters=waiters,
        deadlines=deadlines,
        concurrency=concurrency_gates(settings.namespace, fn, trigger),
        throttle=throttle_gate(settings.namespace, fn, trigger),
        priority_ms=priority_ms(fn, trigger),
        pending=pending,
        trace=run_trace(fn.id, run_id, events),
    )
