"""Flow control at run start: what one matched event does for one function.

Each option names a *gate* per function and key value (the option's ``key`` expression over
the triggering event, or one gate for the whole function; see ``gates.py``). In the order
they apply to an event (docs/flow-control.md has the user's view):

- ``idempotency``: one run per key value while that run is retained; a duplicate starts
  nothing (skip ``"idempotent"``, with the run that has the key).
- ``RateLimit(limit, period, key)``: at most ``limit`` events per ``period`` start (or, with
  debounce, join) a run; the others are skipped (``"rate_limited"``), as in Inngest.
- ``Singleton(key, mode)``: one active run per key; ``"skip"`` drops a new run while one is
  active (``"singleton"``, with the active run), ``"cancel"`` cancels it and starts the new one.
- ``Debounce(period, key, timeout)`` / ``BatchEvents(max_size, timeout, key)``: a queued run
  *collects* the gate's events until it starts; an event that joins it starts no run of its
  own (``"debounced"`` / ``"batched"``, with that run).
- ``Throttle(limit, period, burst, key)``: the run is created at once and queued in the
  throttle's priority-ordered queue; it starts when the throttle lets it (checked again at its
  start, by the store's ``acquire``).
- ``Concurrency`` and ``Priority``: applied by the store each time the run is acquired.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from celery_steps.durations import parse_duration, to_ms
from celery_steps.functions import Function
from celery_steps.runtime.gates import gate as gate_name
from celery_steps.runtime.gates import priority_ms, throttle_gate
from celery_steps.runtime.lifecycle import Lifecycle
from celery_steps.store.base import GateTaken, Skip

log = logging.getLogger("celery_steps.flow")
Started = tuple[str | None, Skip | None]


def gate(life: Lifecycle, kind: str, fn: Function, key: str | None,
         event: dict[str, Any]) -> str:
    return gate_name(life.settings.namespace, kind, fn, key, event)


def start_for(life: Lifecycle, fn: Function, event: dict[str, Any], run_id: str) -> Started:
    """Start (or join, or skip) the run of ``fn`` for one routed event: (the run id it
    started, None) or (None, why it started none). Safe to do twice for one event."""
    flow = fn.flow
    if fn.idempotency is not None or flow.rate_limit is not None or flow.singleton is not None \
            or flow.throttle is not None:
        record = life.store.load_run(run_id)
        if record is not None:
            if str(event["id"]) in record.event_ids:
                return run_id, None  # routed before: started then
            log.info("%s: a run with this idempotency key exists (%s); event %s starts none",
                     fn.id, run_id, event["id"])
            return None, Skip(fn.id, "idempotent", run_id)
    if flow.rate_limit is not None and not _rate_admits(life, fn, event):
        return None, Skip(fn.id, "rate_limited")
    if flow.debounce is not None or flow.batch_events is not None:
        return _collect(life, fn, event, run_id)
    if flow.singleton is not None:
        holder = _claim_singleton(life, fn, event, run_id)
        if holder is not None:
            return None, Skip(fn.id, "singleton", holder)
    delay = 0
    throttle = throttle_gate(life.settings.namespace, fn, event)
    if throttle is not None:
        now = life.clock.now_ms()
        delay = life.store.join_throttle(throttle, function_id=fn.id, run_id=run_id,
                                         score=now - priority_ms(fn, event), now=now)
    created = life.create_and_enqueue(fn, run_id, [event], start_in_ms=delay)
    if not created and fn.idempotency is not None:
        record = life.store.load_run(run_id)  # another event's routing created it meanwhile
        if record is not None and str(event["id"]) not in record.event_ids:
            return None, Skip(fn.id, "idempotent", run_id)
    return run_id, None


def _rate_admits(life: Lifecycle, fn: Function, event: dict[str, Any]) -> bool:
    option = fn.flow.rate_limit
    assert option is not None
    if life.store.admit_rate(gate(life, "rate", fn, option.key, event), limit=option.limit,
                             period_ms=to_ms(parse_duration(option.period)),
                             now=life.clock.now_ms()):
        return True
    log.info("rate limit of %s reached: event %s starts no run", fn.id, event["id"])
    return False


def _claim_singleton(life: Lifecycle, fn: Function, event: dict[str, Any],
                     run_id: str) -> str | None:
    """Make the new run the key's active run: None, or the active run that stays (skip)."""
    option = fn.flow.singleton
    assert option is not None
    store, now = life.store, life.clock.now_ms()
    single = gate(life, "single", fn, option.key, event)
    holder = store.claim_singleton(single, run_id, now=now)
    if holder is None:
        return None
    if option.mode == "skip":
        log.info("singleton %s: run %s is active, event %s skipped", fn.id, holder, event["id"])
        return holder
    life.cancel(holder, reason=f"replaced by a newer run (singleton, event {event['id']})")
    store.claim_singleton(single, run_id, now=now, force=True)
    return None


def _collect(life: Lifecycle, fn: Function, event: dict[str, Any], run_id: str) -> Started:
    """Debounce/batch: join the gate's collecting run, or start collecting in a new one."""
    reason = "debounced" if fn.flow.debounce is not None else "batched"
    for _ in range(10):  # another routing may open the gate between our join and create
        target, start_now, pending, delay = _join(life, fn, event, run_id)
        if pending is None:
            if start_now:
                if target == run_id:
                    life.create_and_enqueue(fn, run_id, [event])
                else:
                    life.enqueue(fn.id, target)
            if target == run_id:
                return run_id, None
            log.info("%s: event %s joined run %s", fn.id, event["id"], target)
            return None, Skip(fn.id, reason, target)
        try:
            life.create_and_enqueue(fn, run_id, [event], start_in_ms=delay, pending=pending)
        except GateTaken:
            continue
        return run_id, None
    raise RuntimeError(f"could not join or open the debounce/batch gate of {fn.id!r}")


def _join(life: Lifecycle, fn: Function, event: dict[str, Any],
          run_id: str) -> tuple[str, bool, str | None, int]:
    """(run id, start now, gate to open, start delay ms): joins the gate's collecting run
    when there is one (its id, no gate); otherwise the caller creates ``run_id`` as the new
    collecting run of the returned gate."""
    flow, now = fn.flow, life.clock.now_ms()
    mode: Literal["debounce", "batch"]
    if flow.debounce is not None:
        option = flow.debounce
        period = to_ms(parse_duration(option.period))
        timeout = None if option.timeout is None else to_ms(parse_duration(option.timeout))
        mode, size, key, delay = "debounce", 0, option.key, period
    else:
        assert flow.batch_events is not None
        batch = flow.batch_events
        period = timeout = to_ms(parse_duration(batch.timeout))
        mode, size, key, delay = "batch", batch.max_size, batch.key, timeout
    pending = gate(life, "pend", fn, key, event)
    joined = life.store.join_pending(pending, event, mode=mode, now=now, max_size=size,
                                      period_ms=period, timeout_ms=timeout)
    if joined is not None:
        return joined[0], joined[1], None, 0
    if mode == "batch" and size <= 1:
        return run_id, True, None, 0
    return run_id, False, pending, delay
