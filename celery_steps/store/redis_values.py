"""How the Redis store encodes and decodes what it keeps: compact JSON, and run records
rebuilt from a run's hashes."""

from __future__ import annotations

import json
from typing import Any

from celery_steps.store.base import RunRecord, Waiter


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def pairs(flat: list[Any]) -> dict[Any, Any]:
    """A Lua HGETALL reply (a flat list) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def waiter_of(raw: bytes | str) -> Waiter:
    """A waiter index entry: ``<registered_at ms>|<waiter JSON>``."""
    stamp, _, body = s(raw).partition("|")
    return Waiter(**{**json.loads(body), "registered_at": int(stamp)})


def _running(raw: str | None) -> tuple[str, int] | None:
    """The run hash's ``cur``: ``<since ms>|<step key>`` of the step executing now."""
    if not raw:
        return None
    since, _, key = raw.partition("|")
    return key, int(since)


def record_of(run_id: str, meta: dict[bytes, bytes], steps: dict[bytes, bytes],
              events: bytes | str | None) -> RunRecord:
    """A run from its metadata hash, steps hash and events."""
    m = {s(k): s(v) for k, v in meta.items()}
    event_list = json.loads(events or "[]")
    return RunRecord(
        id=run_id,
        function_id=m["function_id"],
        status=m["status"],
        created_at=int(m["created_at"]),
        event_ids=(json.loads(m["event_ids"]) if "event_ids" in m
                   else [e.get("id") for e in event_list]),
        ended_at=int(m["ended_at"]) if m.get("ended_at") else None,
        output=json.loads(m["output"]) if "output" in m else None,
        error=json.loads(m["error"]) if "error" in m else None,
        attempt=int(m.get("attempt", 0)),
        parent=json.loads(m["parent"]) if "parent" in m else None,
        deadlines=json.loads(m["deadlines"]) if "deadlines" in m else {},
        crashes=int(m.get("crashes", 0)),
        notify=m.get("notify") == "1",
        events=event_list,
        steps={s(k): json.loads(v) for k, v in steps.items()},
        state_bytes=len(events or b"") + sum(len(v) for v in steps.values()),
        trace=m.get("trace"),
        running_step=_running(m.get("cur")),
    )
