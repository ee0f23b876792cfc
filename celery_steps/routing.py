"""Routing an accepted event: start matching functions, resume waiters, apply cancel_on."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from celery_steps.durations import parse_duration, to_ms
from celery_steps.engine.steps import derived_id
from celery_steps.expressions import Expression, match_key_at
from celery_steps.flow import admit, collect, collects, concurrency_gate, has_admission
from celery_steps.store.base import GateTaken, NewRun, Waiter

if TYPE_CHECKING:
    from celery_steps.extension import CelerySteps
    from celery_steps.functions import Function

log = logging.getLogger("celery_steps.routing")
_conditions: dict[str, Expression] = {}


def run_id_for(function_id: str, event_id: str) -> str:
    """Event-started runs get a derived id, so routing an event twice starts one run."""
    return "run_" + derived_id(function_id, event_id)


def compiled(source: str) -> Expression:
    """Wait conditions compiled once per process (they were checked when the wait began)."""
    expr = _conditions.get(source)
    if expr is None:
        expr = _conditions[source] = Expression(source, variables=("event", "async"))
    return expr


def route_event(steps: CelerySteps, event_id: str) -> list[str]:
    """Route one stored event. Idempotent: a second routing starts and resumes nothing new."""
    store = steps.store
    raw = store.get_event(event_id)
    if raw is None:
        log.warning("event %s expired or was never stored; nothing to route", event_id)
        return []
    envelope = json.loads(raw)
    event: dict[str, Any] = envelope["event"]
    received_at = int(envelope["received_at"])
    run_ids = _start_runs(steps, event)
    _resume_waiters(steps, event, received_at)
    _apply_cancel_on(steps, event, received_at)
    store.complete_routing(event_id, run_ids, ttl_ms=steps.event_ttl_ms)
    return run_ids


def _start_runs(steps: CelerySteps, event: dict[str, Any]) -> list[str]:
    run_ids: list[str] = []
    seen: set[str] = set()
    for fn, trigger in steps.registry.matching(event["name"]):
        if fn.id in seen or not fn.accepts(trigger, event):
            continue
        seen.add(fn.id)
        run_id = run_id_for(fn.id, _dedupe_key(fn, event))
        if collects(fn):
            run_ids.append(_collect(steps, fn, event, run_id))
            continue
        delay = 0
        if has_admission(fn):
            if steps.store.load_run(run_id) is not None:
                run_ids.append(run_id)  # admitted when first routed
                continue
            admitted = admit(steps, fn, event, run_id)
            if admitted is None:
                continue
            delay = admitted
        steps.create_and_enqueue(fn, run_id, [event], start_in_ms=delay)
        run_ids.append(run_id)
    return run_ids


def _collect(steps: CelerySteps, fn: Function, event: dict[str, Any], run_id: str) -> str:
    """Debounce/batch: join the gate's collecting run, or start collecting in a new one."""
    for _ in range(10):  # another routing may open the gate between our join and create
        target, start_now, pending, delay = collect(steps, fn, event, run_id)
        if pending is None:
            if start_now:
                if target == run_id:
                    steps.create_and_enqueue(fn, run_id, [event])
                else:
                    steps.enqueue(fn.id, target)
            return target
        try:
            steps.create_and_enqueue(fn, run_id, [event], start_in_ms=delay, pending=pending)
        except GateTaken:
            continue
        return run_id
    raise RuntimeError(f"could not join or open the debounce/batch gate of {fn.id!r}")


def _dedupe_key(fn: Function, event: dict[str, Any]) -> str:
    """The event id, or ``idem:<key>`` when the function has an idempotency expression:
    then one run per key value exists while the run is retained."""
    if fn.idempotency is None:
        return str(event["id"])
    key = fn.idempotency.key(event=event)
    return str(event["id"]) if key is None else f"idem:{key}"


def new_run(steps: CelerySteps, fn: Function, run_id: str, events: list[dict[str, Any]],
            parent: dict[str, Any] | None = None, start_in_ms: int = 0,
            pending: str | None = None) -> NewRun:
    """A run record: its start watchdog (or throttled start), Timeouts deadlines, cancel_on
    registrations and concurrency gate."""
    now = steps.clock.now_ms()
    start_by = now + int(float(steps.settings.start_watchdog) * 1000)
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
            registered_at=now,
            match_path=c.option.match,
            match_key=match_key_at(trigger, c.option.match) if c.option.match else None,
            condition=c.option.if_exp,
            expires_at=None if c.timeout is None else now + to_ms(c.timeout),
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
        concurrency=concurrency_gate(steps, fn, trigger),
        pending=pending,
    )


def _resume_waiters(steps: CelerySteps, event: dict[str, Any], received_at: int) -> None:
    store = steps.store
    for waiter in store.find_waiters(event["name"], event):
        if received_at < waiter.registered_at:
            continue  # sent before the wait began
        if waiter.condition:
            run = store.load_run(waiter.run_id)
            if run is None or not run.events:
                continue
            if not compiled(waiter.condition).matches(event=run.events[0], **{"async": event}):
                continue
        state = {"status": "completed", "result": event, "ended_at": steps.clock.now_ms()}
        if store.resolve_step(waiter.run_id, waiter.step_key, state,
                              wake_at=steps.safety_wake_at()):
            steps.enqueue(waiter.function_id, waiter.run_id)


def _apply_cancel_on(steps: CelerySteps, event: dict[str, Any], received_at: int) -> None:
    """cancel_on is matched with waiters registered when each run was created."""
    store = steps.store
    for waiter in store.find_waiters(f"cancel:{event['name']}", event):
        if received_at < waiter.registered_at:
            continue
        if waiter.expires_at is not None and received_at > waiter.expires_at:
            continue
        run = store.load_run(waiter.run_id)
        if run is None or run.ended or not run.events:
            continue
        if waiter.condition and not compiled(waiter.condition).matches(
            event=run.events[0], **{"async": event}
        ):
            continue
        steps.cancel(waiter.run_id, reason=f"cancelled by event {event['name']} ({event['id']})")
