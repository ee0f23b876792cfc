"""Helpers shared by the StateStore contract suite (tests/store)."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace
from typing import Any

from celery_steps.expressions import match_key
from celery_steps.store.base import NewRun, Outcome, StateStore, Suspension, Waiter
from celery_steps.store.memory import MemoryStore
from celery_steps.store.redis import RedisStore

NOW = 1_700_000_000_000
LEASE_MS = 30_000
RETENTION_MS = 7 * 24 * 3600 * 1000
FAR_FUTURE = NOW + 10 * 365 * 24 * 3600 * 1000
FUNCTION = "shop/checkout"
EVENT = "shop/order.paid"


def new_id(prefix: str = "run") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create(store: StateStore, run_id: str | None = None, *, function_id: str = FUNCTION,
           created_at: int = NOW, **kwargs: Any) -> str:
    """Create a queued run and return its id."""
    run_id = run_id or new_id()
    kwargs.setdefault("event_ids", [f"evt-{run_id}"])
    assert store.create_run(NewRun(id=run_id, function_id=function_id,
                                   created_at=created_at, **kwargs)) is True
    return run_id


def acquire(store: StateStore, run_id: str, holder: str, *, now: int = NOW,
            lease_ms: int = LEASE_MS) -> Any:
    """``store.acquire`` on behalf of the run's own function (as its task would)."""
    record = store.load_run(run_id)
    function_id = record.function_id if record is not None else FUNCTION
    return store.acquire(run_id, holder, function_id=function_id, now=now, lease_ms=lease_ms)


def acquire_branch(store: StateStore, run_id: str, step_key: str, holder: str) -> Any:
    """``store.acquire_branch`` on behalf of the run's own function."""
    record = store.load_run(run_id)
    function_id = record.function_id if record is not None else FUNCTION
    return store.acquire_branch(run_id, step_key, holder, function_id=function_id)


def holder(store: StateStore, name: str = "tok-1", *, alive: bool = True) -> str:
    """A holder ``token@proc`` whose process is alive (its key beaten for an hour)."""
    proc = f"proc-{name}-{uuid.uuid4().hex[:6]}"
    if alive:
        store.beat(proc, ttl_ms=3_600_000, holding=[])
    return f"{name}@{proc}"


def leased(store: StateStore, *, token: str | None = None, now: int = NOW,
           **kwargs: Any) -> tuple[str, str]:
    """A run created and held by a live holder: (run id, holder)."""
    run_id = create(store, **kwargs)
    token = token or holder(store)
    status, record = acquire(store, run_id, token, now=now)
    assert status == "ok" and record is not None
    return run_id, token


def unstamped(waiters: list[Waiter]) -> list[Waiter]:
    """Waiters as registered, without the store's registration stamp."""
    return [replace(w, registered_at=0) for w in waiters]


def envelope_event(raw: str | None) -> str | None:
    """The event JSON inside a stored envelope ``{"received_at":..,"event":..}``."""
    if raw is None:
        return None
    head = raw.index(',"event":')
    return raw[head + len(',"event":'):-1]


def waiter(run_id: str, step_key: str = "wait", *, event_name: str = EVENT,
           path: str | None = None, value: Any = None,
           function_id: str = FUNCTION) -> Waiter:
    return Waiter(
        event_name=event_name, run_id=run_id, function_id=function_id, step_key=step_key,
        match_path=path, match_key=match_key(value) if path is not None else None,
    )


def wait_step(wake_at: int | None = None) -> dict[str, Any]:
    return {"op": "wait_for_event", "pos": 0, "status": "waiting", "wake_at": wake_at}


def suspended_waiting(store: StateStore, *, wake_at: int = NOW + 3_600_000,
                      waiters: tuple[Waiter, ...] | None = None,
                      **kwargs: Any) -> tuple[str, Waiter]:
    """A run suspended in ``wait_for_event`` on step ``wait`` with one waiter (no lease)."""
    run_id, token = leased(store, **kwargs)
    w = waiter(run_id)
    suspension = Suspension("waiting", wake_at, step_key="wait",
                            step_state=wait_step(wake_at), waiters=waiters or (w,))
    assert store.suspend(run_id, token, suspension) is False
    return run_id, w


def finished(store: StateStore, status: str = "completed", **kwargs: Any) -> str:
    run_id, token = leased(store, **kwargs)
    error = {"name": "ValueError", "message": "boom"} if status == "failed" else None
    output = '{"ok": true}' if status == "completed" else None
    assert store.finish(run_id, token, Outcome(status, NOW + 50, output, error),  # type: ignore[arg-type]
                        retention_ms=RETENTION_MS) is True
    return run_id


def run_member(run_id: str, function_id: str = FUNCTION) -> str:
    return f"r|{function_id}|{run_id}"


def claimed(store: StateStore, now: int, *, redo_ms: int = 10**9) -> set[str]:
    """Members due at ``now`` (claims them, pushing them back by ``redo_ms``)."""
    return {member for member, _ in store.claim_due(now=now, limit=10_000, redo_ms=redo_ms)}


def assert_due_exactly_at(store: StateStore, member: str, due: int) -> None:
    """``member`` is scheduled at ``due``: not due a millisecond before, due at ``due``."""
    assert member not in claimed(store, due - 1), f"{member} was due before {due}"
    assert member in claimed(store, due), f"{member} was not due at {due}"


def assert_not_scheduled(store: StateStore, member: str) -> None:
    assert member not in claimed(store, FAR_FUTURE), f"{member} is still scheduled"


def blocked_waiters(store: StateStore, *, on: str = "signal") -> int:
    """How many threads are blocked right now in ``wait_for_signal`` (``on="signal"``) or
    in ``wait_ended`` (``on="ended"``)."""
    if isinstance(store, MemoryStore):
        condition = store._signal if on == "signal" else store._ended
        return len(condition._waiters)  # type: ignore[attr-defined]
    assert isinstance(store, RedisStore)
    nodes = {"target_nodes": "all"} if store.cluster else {}
    if on == "signal":  # subscribed: a signal sent from now on reaches it
        counts = store.r.pubsub_numsub(store.keys.signal, **nodes)
        return sum(int(n) for _, n in (counts.values() if isinstance(counts, dict) else counts))
    clients = store.r.client_list(**nodes)
    if isinstance(clients, dict):
        clients = [c for per_node in clients.values() for c in per_node]
    return sum(1 for c in clients if c.get("cmd") == "blmove")


class Waiting(threading.Thread):
    """A thread blocked in ``store.wait_for_signal(timeout)``, timing the wait."""

    def __init__(self, store: StateStore, timeout: float) -> None:
        super().__init__(daemon=True)
        self.store, self.timeout = store, timeout
        self.elapsed: float | None = None

    def run(self) -> None:
        start = time.monotonic()
        self.store.wait_for_signal(self.timeout)
        self.elapsed = time.monotonic() - start
