"""Contract: flow-control gates (concurrency at acquire, rate/throttle admission, singletons)."""

from __future__ import annotations

import uuid

import pytest

from celery_steps.store.base import (
    CONCURRENCY_RETRY_MS,
    SINGLETON_CLAIM_MS,
    GateTaken,
    NewRun,
    Outcome,
    Suspension,
)
from tests.store._support import LEASE_MS, NOW, RETENTION_MS, acquire, create, run_member


def a_gate(kind: str) -> str:
    return f"gate-{kind}-{uuid.uuid4().hex[:8]}"


def test_a_concurrency_gate_lets_limit_runs_hold_a_lease_at_once(store) -> None:
    gate = a_gate("conc")
    runs = [create(store, concurrency=(gate, 2)) for _ in range(3)]

    results = [acquire(store, r, f"tok-{i}", now=NOW, lease_ms=LEASE_MS)[0]
               for i, r in enumerate(runs)]

    assert results == ["ok", "ok", "limited"]
    # the limited run tries again a little later
    assert store.claim_due(now=NOW + CONCURRENCY_RETRY_MS, limit=10, redo_ms=10**9) == [
        (run_member(runs[2]), NOW + CONCURRENCY_RETRY_MS + 10**9)]


def test_suspending_finishing_or_cancelling_frees_a_place(store) -> None:
    gate = a_gate("conc")
    a, b, c, d = (create(store, concurrency=(gate, 1)) for _ in range(4))

    assert acquire(store, a, "ta", now=NOW, lease_ms=LEASE_MS)[0] == "ok"
    assert acquire(store, b, "tb", now=NOW, lease_ms=LEASE_MS)[0] == "limited"
    store.suspend(a, "ta", Suspension("sleeping", NOW + 60_000))
    assert acquire(store, b, "tb", now=NOW, lease_ms=LEASE_MS)[0] == "ok"
    store.finish(b, "tb", Outcome("completed", NOW, "1"), retention_ms=RETENTION_MS)
    assert acquire(store, c, "tc", now=NOW, lease_ms=LEASE_MS)[0] == "ok"
    store.cancel(c, now=NOW, reason="stop", retention_ms=RETENTION_MS)
    assert acquire(store, d, "td", now=NOW, lease_ms=LEASE_MS)[0] == "ok"


def test_a_place_held_by_an_expired_lease_is_given_to_the_next_run(store) -> None:
    gate = a_gate("conc")
    stale, fresh = create(store, concurrency=(gate, 1)), create(store, concurrency=(gate, 1))
    assert acquire(store, stale, "old", now=NOW, lease_ms=LEASE_MS)[0] == "ok"

    later = NOW + LEASE_MS + 1
    assert acquire(store, fresh, "new", now=later, lease_ms=LEASE_MS)[0] == "ok"


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

    assert store.claim_singleton(gate, first, now=NOW) is None
    assert store.claim_singleton(gate, second, now=NOW) == first
    assert store.claim_singleton(gate, third, now=NOW, force=True) is None
    assert store.claim_singleton(gate, second, now=NOW) == third
    store.cancel(third, now=NOW, reason="done", retention_ms=RETENTION_MS)
    assert store.claim_singleton(gate, second, now=NOW) is None


def test_a_singleton_gate_claimed_for_a_run_not_created_yet_stays_taken(store) -> None:
    # given a gate claimed for a run whose routing has not created it yet
    gate = a_gate("single")
    assert store.claim_singleton(gate, "run-being-created", now=NOW) is None

    # when another run claims it within the claim window, then it is refused
    other = create(store)
    assert store.claim_singleton(gate, other, now=NOW + SINGLETON_CLAIM_MS - 1) == (
        "run-being-created")
    # and the claimer itself may claim again (its routing retried)
    assert store.claim_singleton(gate, "run-being-created", now=NOW + 10) is None

    # but once the window passed with no such run, the gate is free
    assert store.claim_singleton(gate, other, now=NOW + 10 + SINGLETON_CLAIM_MS) is None


def event(n: int) -> dict:
    return {"name": "t/item", "data": {"n": n}, "id": f"evt-{uuid.uuid4().hex[:8]}-{n}",
            "ts": NOW}


def collecting(store, gate: str, first: dict) -> str:
    return create(store, events=[first], event_ids=[first["id"]], pending=gate)


def test_without_a_collecting_run_join_pending_returns_none(store) -> None:
    assert store.join_pending(a_gate("pend"), event(1), mode="batch", now=NOW, max_size=3,
                              period_ms=1_000, timeout_ms=1_000) is None


def test_a_batch_collects_events_and_starts_when_full(store) -> None:
    gate = a_gate("pend")
    first = event(0)
    run_id = collecting(store, gate, first)

    joins = [store.join_pending(gate, event(n), mode="batch", now=NOW, max_size=3,
                                period_ms=60_000, timeout_ms=60_000) for n in (1, 2)]
    after_full = store.join_pending(gate, event(3), mode="batch", now=NOW, max_size=3,
                                    period_ms=60_000, timeout_ms=60_000)

    assert joins == [(run_id, False), (run_id, True)]
    assert after_full is None  # the full batch closed its gate
    record = store.load_run(run_id)
    assert [e["data"]["n"] for e in record.events] == [0, 1, 2]
    assert record.event_ids == [e["id"] for e in record.events]


def test_an_event_joins_a_batch_only_once(store) -> None:
    gate = a_gate("pend")
    run_id = collecting(store, gate, event(0))
    again = event(1)

    for _ in range(2):
        store.join_pending(gate, again, mode="batch", now=NOW, max_size=5, period_ms=1,
                           timeout_ms=1)

    assert len(store.load_run(run_id).events) == 2


def test_debounce_keeps_the_last_event_and_moves_the_start_within_the_timeout(store) -> None:
    gate = a_gate("pend")
    run_id = collecting(store, gate, event(0))
    member = run_member(run_id)

    store.join_pending(gate, event(1), mode="debounce", now=NOW + 1_000, max_size=0,
                       period_ms=5_000, timeout_ms=8_000)
    first_due = store.claim_due(now=NOW + 6_000, limit=10, redo_ms=10**9)
    store.join_pending(gate, event(2), mode="debounce", now=NOW + 7_000, max_size=0,
                       period_ms=5_000, timeout_ms=8_000)

    assert first_due == [(member, NOW + 6_000 + 10**9)]  # due at NOW + 6 s (1 s + 5 s)
    assert store.claim_due(now=NOW + 8_000, limit=10, redo_ms=1) == [(member, NOW + 8_001)]
    assert [e["data"]["n"] for e in store.load_run(run_id).events] == [2]


def test_acquiring_the_collecting_run_closes_its_gate(store) -> None:
    gate = a_gate("pend")
    run_id = collecting(store, gate, event(0))

    assert acquire(store, run_id, "tok", now=NOW, lease_ms=LEASE_MS)[0] == "ok"

    assert store.join_pending(gate, event(1), mode="batch", now=NOW, max_size=3,
                              period_ms=1, timeout_ms=1) is None


def test_a_second_collecting_run_for_a_held_gate_is_refused_and_not_created(store) -> None:
    gate = a_gate("pend")
    collecting(store, gate, event(0))
    late = f"late-{uuid.uuid4().hex[:6]}"

    with pytest.raises(GateTaken):
        store.create_run(NewRun(id=late, function_id="f", event_ids=[], created_at=NOW,
                                pending=gate))

    assert store.load_run(late) is None


def test_an_event_whose_data_mentions_another_events_id_still_joins(store) -> None:
    # given a batch whose first event's data contains the id of the next event
    gate = a_gate("pend")
    second = event(2)
    first = {**event(1), "data": {"next": {"id": second["id"]}}}
    run_id = collecting(store, gate, first)
    # when the next event is routed, then it joins the batch (not mistaken for a duplicate)
    assert store.join_pending(gate, second, mode="batch", now=NOW, max_size=5,
                              period_ms=60_000, timeout_ms=None) == (run_id, False)
    assert [e["id"] for e in store.load_run(run_id).events] == [first["id"], second["id"]]
