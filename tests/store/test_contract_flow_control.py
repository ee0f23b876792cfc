"""Contract: flow-control gates (concurrency at acquire, rate/throttle admission, singletons)."""

from __future__ import annotations

import uuid

from celery_steps.store.base import CONCURRENCY_RETRY_MS, Outcome, Suspension
from tests.store._support import LEASE_MS, NOW, RETENTION_MS, create, run_member


def a_gate(kind: str) -> str:
    return f"gate-{kind}-{uuid.uuid4().hex[:8]}"


def test_a_concurrency_gate_lets_limit_runs_hold_a_lease_at_once(store) -> None:
    gate = a_gate("conc")
    runs = [create(store, concurrency=(gate, 2)) for _ in range(3)]

    results = [store.acquire(r, f"tok-{i}", now=NOW, lease_ms=LEASE_MS)[0]
               for i, r in enumerate(runs)]

    assert results == ["ok", "ok", "limited"]
    # the limited run tries again a little later
    assert store.claim_due(now=NOW + CONCURRENCY_RETRY_MS, limit=10, redo_ms=10**9) == [
        (run_member(runs[2]), NOW + CONCURRENCY_RETRY_MS + 10**9)]


def test_suspending_finishing_or_cancelling_frees_a_place(store) -> None:
    gate = a_gate("conc")
    a, b, c, d = (create(store, concurrency=(gate, 1)) for _ in range(4))

    assert store.acquire(a, "ta", now=NOW, lease_ms=LEASE_MS)[0] == "ok"
    assert store.acquire(b, "tb", now=NOW, lease_ms=LEASE_MS)[0] == "limited"
    store.suspend(a, "ta", Suspension("sleeping", NOW + 60_000))
    assert store.acquire(b, "tb", now=NOW, lease_ms=LEASE_MS)[0] == "ok"
    store.finish(b, "tb", Outcome("completed", NOW, "1"), retention_ms=RETENTION_MS)
    assert store.acquire(c, "tc", now=NOW, lease_ms=LEASE_MS)[0] == "ok"
    store.cancel(c, now=NOW, reason="stop", retention_ms=RETENTION_MS)
    assert store.acquire(d, "td", now=NOW, lease_ms=LEASE_MS)[0] == "ok"


def test_a_place_held_by_an_expired_lease_is_given_to_the_next_run(store) -> None:
    gate = a_gate("conc")
    stale, fresh = create(store, concurrency=(gate, 1)), create(store, concurrency=(gate, 1))
    assert store.acquire(stale, "old", now=NOW, lease_ms=LEASE_MS)[0] == "ok"

    later = NOW + LEASE_MS + 1
    assert store.acquire(fresh, "new", now=later, lease_ms=LEASE_MS)[0] == "ok"


def test_rate_admission_refuses_beyond_the_limit_within_the_period(store) -> None:
    gate = a_gate("rate")

    def admit(now: int) -> int:
        return store.admit(gate, mode="rate", limit=2, period_ms=1_000, burst=1, now=now)

    assert [admit(NOW), admit(NOW + 10), admit(NOW + 20)] == [0, 0, -1]
    assert admit(NOW + 1_001) == 0  # the first admission left the window


def test_throttle_admission_spaces_starts_and_allows_a_burst(store) -> None:
    gate = a_gate("throttle")
    delays = [store.admit(gate, mode="throttle", limit=2, period_ms=1_000, burst=2, now=NOW)
              for _ in range(4)]

    assert delays == [0, 0, 500, 1_000]


def test_a_singleton_gate_is_held_by_its_run_until_that_run_ends(store) -> None:
    gate = a_gate("single")
    first = create(store)
    second, third = create(store), create(store)

    assert store.claim_singleton(gate, first) is None
    assert store.claim_singleton(gate, second) == first
    assert store.claim_singleton(gate, third, force=True) is None
    assert store.claim_singleton(gate, second) == third
    store.cancel(third, now=NOW, reason="done", retention_ms=RETENTION_MS)
    assert store.claim_singleton(gate, second) is None
