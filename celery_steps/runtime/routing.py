"""Routing an accepted event: start matching functions, resume waiters, apply cancel_on."""

from __future__ import annotations

import json
import logging
from typing import Any

from celery_steps.errors import RunNotFound
from celery_steps.events import CRON_EVENT
from celery_steps.expression_ast import prune, shape
from celery_steps.expressions import Expression
from celery_steps.faults import crash_point
from celery_steps.functions import Function
from celery_steps.runtime.flow import start_for
from celery_steps.runtime.lifecycle import Lifecycle
from celery_steps.runtime.runs import run_id_for
from celery_steps.store.base import Skip, StateStore, Waiter

log = logging.getLogger("celery_steps.routing")
_conditions: dict[str, Expression] = {}


def compiled(source: str) -> Expression:
    """Wait conditions compiled once per process (they were checked when the wait began)."""
    expr = _conditions.get(source)
    if expr is None:
        expr = _conditions[source] = Expression(source, variables=("event", "async"))
    return expr


def route_event(life: Lifecycle, event_id: str) -> list[str]:
    """Route one stored event. Idempotent: a second routing starts and resumes nothing new."""
    store = life.store
    raw = store.get_event(event_id)
    if raw is None:
        log.warning("event %s expired or was never stored; nothing to route", event_id)
        store.unschedule(f"e|{event_id}")  # its routing timer would fire again and again
        return []
    envelope = json.loads(raw)
    event: dict[str, Any] = envelope["event"]
    received_at = int(envelope["received_at"])
    run_ids, skipped = _start_runs(life, event)
    crash_point("route.after_start_runs", event["name"])
    _resume_waiters(life, event, received_at)
    _apply_cancel_on(life, event, received_at)
    crash_point("route.before_complete", event["name"])
    store.complete_routing(event_id, run_ids, ttl_ms=life.event_ttl_ms, skipped=tuple(skipped))
    return run_ids


def _targets(life: Lifecycle, event: dict[str, Any]) -> list[Function]:
    """The functions an event starts: those whose trigger matches it, or, for a cron tick,
    the function it ticks for."""
    if event["name"] == CRON_EVENT:
        fn = life.registry.by_id.get(str(event.get("data", {}).get("function_id")))
        return [fn] if fn is not None else []
    return [fn for fn, trigger in life.registry.matching(event["name"])
            if fn._accepts(trigger, event)]


def _start_runs(life: Lifecycle, event: dict[str, Any]) -> tuple[list[str], list[Skip]]:
    """Start the run of each matching function: the runs started, and why the others
    started none."""
    run_ids: list[str] = []
    skipped: list[Skip] = []
    seen: set[str] = set()
    for fn in _targets(life, event):
        if fn.id in seen:
            continue
        seen.add(fn.id)
        started, skip = start_for(life, fn, event, run_id_for(fn.id, _dedupe_key(fn, event)))
        if started is not None:
            run_ids.append(started)
        if skip is not None:
            skipped.append(skip)
    return run_ids, skipped


def _dedupe_key(fn: Function, event: dict[str, Any]) -> str:
    """The event id, or ``idem:<key>`` when the function has an idempotency expression:
    then one run per key value exists while the run is retained."""
    if fn._idempotency is None:
        return str(event["id"])
    key = fn._idempotency.key(event=event)
    return str(event["id"]) if key is None else f"idem:{key}"


def _resume_waiters(life: Lifecycle, event: dict[str, Any], received_at: int) -> None:
    store = life.store
    views: dict[str, dict[str, Any]] = {}
    for waiter in store.find_waiters(event["name"], event):
        if received_at < waiter.registered_at:
            continue  # sent before the wait began
        if not _condition_holds(store, waiter, event, views):
            continue
        state = {"status": "completed", "result": event, "ended_at": life.clock.now_ms()}
        life.resolve_and_wake(waiter.run_id, waiter.function_id, waiter.step_key, state)


def _apply_cancel_on(life: Lifecycle, event: dict[str, Any], received_at: int) -> None:
    """cancel_on is matched with waiters registered when each run was created."""
    store = life.store
    views: dict[str, dict[str, Any]] = {}
    for waiter in store.find_waiters(f"cancel:{event['name']}", event):
        if received_at < waiter.registered_at:
            continue
        if waiter.timeout_ms is not None and received_at > waiter.registered_at + waiter.timeout_ms:
            continue
        if not _condition_holds(store, waiter, event, views):
            continue
        try:  # a run that ended meanwhile stays as it is
            life.cancel(waiter.run_id, reason=f"cancelled by event {event['name']} ({event['id']})")
        except RunNotFound:
            continue  # expired meanwhile


def _condition_holds(store: StateStore, waiter: Waiter, event: dict[str, Any],
                     views: dict[str, dict[str, Any]]) -> bool:
    """The waiter's condition over its run's trigger (``event``) and ``event`` (``async``),
    from what the waiter keeps of the trigger. Only a waiter that keeps none loads its run:
    one stored by an older version, one whose parts were too big, a debounced run's
    cancel_on (see :mod:`celery_steps.engine.waiters`).

    ``views`` caches, per condition, what it reads of ``event``: evaluated against many
    waiters, the condition converts only that into CEL values, not the whole event."""
    condition = waiter.condition
    if not condition:
        return True
    trigger = waiter.trigger
    if trigger is None:
        run = store.load_run(waiter.run_id)
        if run is None or not run.events:
            return False
        trigger = run.events[0]
    incoming = views.get(condition)
    if incoming is None:
        reads = shape(condition).async_reads
        incoming = views[condition] = event if reads is None else prune(event, reads)
    return compiled(condition).matches(event=trigger, **{"async": incoming})
