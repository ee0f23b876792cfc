"""Flow-control gate names and the per-run flow values: one gate per function, option kind
and key value.

A gate is named ``<ns>:gate:<kind>:<function>:<key value>``, where the key value is the
option's ``key`` expression evaluated over the triggering event (empty for a function-wide
gate). Concurrency and throttle gates keep a waiting queue next to them, so their name carries
a Redis Cluster hash tag: ``<ns>:gate:conc:{fn:<function>:<key value>}`` (or
``{env:<key value>}`` for a limit shared by functions, ``Concurrency(scope="env")``) and
``<ns>:gate:throttle:{fn:<function>:<key value>}``. The store keeps each gate's state under
that name (see ``store/redis.py``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from celery_steps.durations import parse_duration, to_ms
from celery_steps.expressions import Expression, ExpressionEvalError
from celery_steps.functions import Function
from celery_steps.store.base import ConcurrencyGate, ThrottleGate

log = logging.getLogger("celery_steps.flow")
MAX_PRIORITY_S = 600
_keys: dict[str, Expression] = {}


def key_value(key: str | None, event: dict[str, Any], kind: str) -> str:
    """The option's key expression over the event ("" without a key, or when it fails)."""
    if not key:
        return ""
    expr = _keys.get(key)
    if expr is None:
        expr = _keys[key] = Expression(key, what=f"{kind} key")
    return expr.key(event=event) or ""


def gate(namespace: str, kind: str, fn: Function, key: str | None,
         event: dict[str, Any]) -> str:
    """The store key of a function's gate for this event's key value."""
    return f"{namespace}:gate:{kind}:{fn.id}:{key_value(key, event, kind)}"


def concurrency_gates(namespace: str, fn: Function,
                      event: dict[str, Any]) -> tuple[ConcurrencyGate, ...]:
    """The concurrency gates a run of ``fn`` started by ``event`` holds while it executes."""
    gates = []
    for option in fn.flow.concurrency_limits:
        value = key_value(option.key, event, "concurrency")
        scope = f"env:{value}" if option.scope == "env" else f"fn:{fn.id}:{value}"
        gates.append(ConcurrencyGate(f"{namespace}:gate:conc:{{{scope}}}", option.limit))
    return tuple(gates)


def throttle_gate(namespace: str, fn: Function, event: dict[str, Any]) -> ThrottleGate | None:
    """The throttle gate a run of ``fn`` started by ``event`` passes through at its start."""
    option = fn.flow.throttle
    if option is None:
        return None
    value = key_value(option.key, event, "throttle")
    return ThrottleGate(f"{namespace}:gate:throttle:{{fn:{fn.id}:{value}}}", option.limit,
                        to_ms(parse_duration(option.period)), option.burst)


_priorities: dict[str, Expression] = {}


def priority_ms(fn: Function, event: dict[str, Any]) -> int:
    """The run's priority in ms: ``Priority.run`` over the event, clamped to ±600 s; 0 when
    the function has none, or when the expression fails or gives no number (logged)."""
    option = fn.flow.priority
    if option is None:
        return 0
    expr = _priorities.get(option.run)
    if expr is None:
        expr = _priorities[option.run] = Expression(option.run, what="priority.run")
    try:
        value = expr.evaluate(event=event)
    except ExpressionEvalError as exc:
        log.warning("function %r: %s; the run gets priority 0", fn.id, exc)
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value):
        log.warning("function %r: priority.run gave %r, not a number of seconds; the run gets "
                    "priority 0", fn.id, value)
        return 0
    seconds = max(-MAX_PRIORITY_S, min(MAX_PRIORITY_S, value))
    if seconds != value:
        log.warning("function %r: priority.run gave %r, outside [-600, 600]; clamped to %s",
                    fn.id, value, seconds)
    return int(seconds * 1000)
