"""Flow-control gate names: one gate per function, option kind and key value.

A gate is named ``<ns>:gate:<kind>:<function>:<key value>``, where the key value is the
option's ``key`` expression evaluated over the triggering event (empty for a function-wide
gate). The store keeps each gate's state under that name (see ``store/redis.py``).
"""

from __future__ import annotations

from typing import Any

from celery_steps.expressions import Expression
from celery_steps.functions import Function

_keys: dict[str, Expression] = {}


def gate(namespace: str, kind: str, fn: Function, key: str | None,
         event: dict[str, Any]) -> str:
    """The store key of a function's gate for this event's key value."""
    value = ""
    if key:
        expr = _keys.get(key)
        if expr is None:
            expr = _keys[key] = Expression(key, what=f"{kind} key")
        value = expr.key(event=event) or ""
    return f"{namespace}:gate:{kind}:{fn.id}:{value}"


def concurrency_gate(namespace: str, fn: Function,
                     event: dict[str, Any]) -> tuple[str, int] | None:
    """The concurrency gate a run of ``fn`` started by ``event`` holds while it executes."""
    option = fn.flow.concurrency
    if option is None:
        return None
    return gate(namespace, "conc", fn, option.key, event), option.limit
