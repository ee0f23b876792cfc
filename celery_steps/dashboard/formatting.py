"""How the dashboard writes times, durations, triggers, flow control and JSON values.

Plain functions returning text; the templates escape everything they print.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from celery_steps.clock import ms_to_datetime
from celery_steps.functions import FlowControl, Function
from celery_steps.options import TriggerCron, TriggerEvent

WHOLE_SECONDS = 60_000


def format_time(value: datetime | None) -> str:
    """``2026-11-25 10:00:00.123Z`` (UTC); ``-`` when unknown."""
    if value is None:
        return "-"
    utc = value.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%d %H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def format_ms(ms: int | None) -> str:
    """A stored time (ms since the epoch, as in ``Event.ts``) like :func:`format_time`."""
    return format_time(ms_to_datetime(ms))


def format_span(delta: timedelta | None) -> str:
    """``12ms``, ``3.41s``, ``2m05s``, ``1h02m``, ``3d04h``; ``-`` when unknown."""
    if delta is None:
        return "-"
    ms = max(0, round(delta.total_seconds() * 1000))
    if ms < 1000:
        return f"{ms}ms"
    if ms < WHOLE_SECONDS:
        return f"{ms / 1000:.2f}s"
    seconds = ms // 1000
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86_400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86_400}d{seconds % 86_400 // 3600:02d}h"


def format_duration(start: datetime | None, end: datetime | None) -> str:
    return "-" if start is None or end is None else format_span(end - start)


def format_trigger(trigger: TriggerEvent | TriggerCron) -> str:
    if isinstance(trigger, TriggerCron):
        return f"cron {trigger.cron}" + (f" ({trigger.tz})" if trigger.tz else " (UTC)")
    return f"event {trigger.event}" + (f" if {trigger.if_exp}" if trigger.if_exp else "")


def _keyed(text: str, key: str | None) -> str:
    return f"{text} per {key}" if key else text


def describe_flow(flow: FlowControl) -> list[str]:
    """One line per flow-control option that is set, in declaration order."""
    lines: list[str] = []
    for c in flow.concurrency_limits:
        scope = " (shared: env)" if c.scope == "env" else ""
        lines.append(_keyed(f"concurrency {c.limit}{scope}", c.key))
    if flow.throttle:
        t = flow.throttle
        lines.append(_keyed(f"throttle {t.limit} per {t.period} (burst {t.burst})", t.key))
    if flow.rate_limit:
        r = flow.rate_limit
        lines.append(_keyed(f"rate limit {r.limit} per {r.period}", r.key))
    if flow.debounce:
        d = flow.debounce
        extra = f", at most {d.timeout}" if d.timeout else ""
        lines.append(_keyed(f"debounce {d.period}{extra}", d.key))
    if flow.priority:
        lines.append(f"priority {flow.priority.run}")
    if flow.batch_events:
        b = flow.batch_events
        lines.append(_keyed(f"batch {b.max_size} events or {b.timeout}", b.key))
    if flow.idempotency:
        lines.append(f"idempotency {flow.idempotency}")
    if flow.singleton:
        lines.append(_keyed(f"singleton ({flow.singleton.mode})", flow.singleton.key))
    return lines


def function_row(fn: Function) -> dict[str, Any]:
    """What the functions table shows about one function."""
    return {
        "id": fn.id,
        "name": fn.name,
        "triggers": [format_trigger(t) for t in fn.triggers],
        "flow": describe_flow(fn.flow),
        "retries": fn.retries,
        "queue": fn.queue,
        "internal": fn.internal,
    }


def pretty_json(value: Any) -> str:
    """Indented JSON for a ``<pre>`` block (escaped by the template, never markup)."""
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)
