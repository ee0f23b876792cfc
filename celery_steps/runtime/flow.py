"""Flow control at run start: rate limits, throttles, singletons, concurrency gates.

Each option names a *gate* per function and key value (the option's ``key`` expression over
the triggering event, or one gate for the whole function). Gates live in the store
(``<ns>:gate:<kind>:<fn>:<key>``, see ``store/redis.py``):

- ``RateLimit(limit, period, key)``: at most ``limit`` runs start per ``period``; events
  beyond it start nothing (as in Inngest: they are skipped, not queued).
- ``Throttle(limit, period, burst, key)``: the same rate, but runs beyond it are queued and
  start later (a durable timer), ``burst`` at once.
- ``Singleton(key, mode)``: one active run per key; ``"skip"`` drops a new run while one is
  active, ``"cancel"`` cancels the active run and starts the new one.
- ``Concurrency(limit, key)``: at most ``limit`` runs execute at once (hold a lease); sleeping
  or waiting runs do not count. Checked when a run is acquired, so it holds across workers.
- ``Debounce(period, key, timeout)``: one run per burst of events; it starts ``period`` after
  the last event (at the latest ``timeout`` after the first) and sees only the last event.
- ``BatchEvents(max_size, timeout, key)``: one run per ``max_size`` events, or per what came
  within ``timeout`` of the first; ``ctx.events`` holds them all.

Debounce and batching share one mechanism: a queued run *collects* a gate's events (the gate
points at it) until it starts, which closes the gate; the next event opens a new one.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from celery_steps.durations import parse_duration, to_ms
from celery_steps.functions import Function
from celery_steps.runtime.gates import gate as gate_name
from celery_steps.runtime.lifecycle import Lifecycle

log = logging.getLogger("celery_steps.flow")


def gate(life: Lifecycle, kind: str, fn: Function, key: str | None,
         event: dict[str, Any]) -> str:
    return gate_name(life.settings.namespace, kind, fn, key, event)


def has_admission(fn: Function) -> bool:
    flow = fn.flow
    return any(x is not None for x in (flow.rate_limit, flow.throttle, flow.singleton))


def admit(life: Lifecycle, fn: Function, event: dict[str, Any], run_id: str) -> int | None:
    """Whether a new run of ``fn`` may start: None to skip it, else ms to wait first."""
    flow, store, now = fn.flow, life.store, life.clock.now_ms()
    if flow.rate_limit is not None:
        option = flow.rate_limit
        period = to_ms(parse_duration(option.period))
        if store.admit(gate(life, "rate", fn, option.key, event), mode="rate",
                       limit=option.limit, period_ms=period, burst=1, now=now) < 0:
            log.info("rate limit of %s reached: event %s starts no run", fn.id, event["id"])
            return None
    if flow.singleton is not None:
        option_s = flow.singleton
        single = gate(life, "single", fn, option_s.key, event)
        holder = store.claim_singleton(single, run_id, now=now)
        if holder is not None:
            if option_s.mode == "skip":
                log.info("singleton %s: run %s is active, event %s skipped",
                         fn.id, holder, event["id"])
                return None
            life.cancel(holder, reason=f"replaced by a newer run (singleton, event "
                                        f"{event['id']})")
            store.claim_singleton(single, run_id, now=now, force=True)
    delay = 0
    if flow.throttle is not None:
        option_t = flow.throttle
        delay = store.admit(gate(life, "throttle", fn, option_t.key, event), mode="throttle",
                            limit=option_t.limit,
                            period_ms=to_ms(parse_duration(option_t.period)),
                            burst=max(1, option_t.burst), now=now)
    return delay


def collect(life: Lifecycle, fn: Function, event: dict[str, Any],
            run_id: str) -> tuple[str, bool, str | None, int]:
    """Debounce/batch: (run id, start now, gate to open, start delay ms).

    Joins the gate's collecting run when there is one (returns its id and no gate); otherwise
    the caller creates ``run_id`` as the new collecting run of the returned gate.
    """
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


def collects(fn: Function) -> bool:
    return fn.flow.debounce is not None or fn.flow.batch_events is not None
