"""Contract: flow-control gates (concurrency places and queues, priority, throttles, rate
limits, singletons, debounce/batch collection, skipped starts)."""

from __future__ import annotations

import uuid

import pytest

from celery_steps.store.base import (
    CONCURRENCY_RETRY_MS,
    SINGLETON_CLAIM_MS,
    WAITER_GRACE_MS,
    ConcurrencyGate,
    GateTaken,
    NewRun,
    Outcome,
    Skip,
    Suspension,
    ThrottleGate,
)
from tests.store._support import (
    FAR_FUTURE,
    LEASE_MS,
    NOW,
    RETENTION_MS,
    acquire,
    claimed,
    create,
    new_id,
    run_member,
)


def a_gate(kind: str) -> str:
    return f"gate-{kind}-{{{uuid.uuid4().hex[:8]}}}"  # one slot, as the runtime names them


def gated(store, *gates: tuple[str, int], created_at: int = NOW, priority_ms: int = 0,
          function_id: str = "shop/checkout") -> str:
    """A queued run holding a place in each (gate, limit) while it executes."""
    return create(store, concurrency=tuple(ConcurrencyGate(g, limit) for g, limit in gates),
                  created_at=created_at, priority_ms=priority_ms, function_id=function_id)


def status_of(store, run_id: str, *, now: int = NOW, token: str | None = None) -> str:
    return acquire(store, run_id, token or f"tok-{uuid.uuid4().hex[:6]}", now=now,
                   lease_ms=LEASE_MS)[0]


def test_a_concurrency_gate_lets_limit_runs_hold_a_lease_at_once(store) -> None:
    gate = a_gate("conc")
    runs = [gated(store, (gate, 2)) for _ in range(3)]

    results = [status_of(store, r) for r in runs]

    assert results == ["ok", "ok", "limited"]
    # the limited run tries again a little later
    assert store.claim_due(now=NOW + CONCURRENCY_RETRY_MS, limit=10, redo_ms=10**9) == [
        (run_member(runs[2]), NOW + CONCURRENCY_RETRY_MS + 10**9)]


def test_suspending_finishing_or_cancelling_frees_a_place(store) -> None:
    gate = a_gate("conc")
    a, b, c, d = (gated(store, (gate, 1)) for _ in range(4))

    assert status_of(store, a, token="ta") == "ok"
    assert status_of(store, b, token="tb") == "limited"
    store.suspend(a, "ta", Suspension("sleeping", NOW + 60_000))
    assert status_of(store, b, token="tb") == "ok"
    store.finish(b, "tb", Outcome("completed", NOW, "1"), retention_ms=RETENTION_MS)
    assert status_of(store, c, token="tc") == "ok"
    store.cancel(c, now=NOW, reason="stop", retention_ms=RETENTION_MS)
    assert status_of(store, d, token="td") == "ok"


def test_releasing_frees_a_place(store) -> None:
    gate = a_gate("conc")
    a, b = gated(store, (gate, 1)), gated(store, (gate, 1))
    assert status_of(store, a, token="ta") == "ok"

    store.release(a, "ta")

    assert status_of(store, b) == "ok"


def test_a_place_held_by_an_expired_lease_is_given_to_the_next_run(store) -> None:
    gate = a_gate("conc")
    stale, fresh = gated(store, (gate, 1)), gated(store, (gate, 1))
    assert status_of(store, stale) == "ok"

    assert status_of(store, fresh, now=NOW + LEASE_MS + 1) == "ok"


def test_renewing_a_lease_keeps_the_place_past_the_first_lease(store) -> None:
    # given a run holding the only place, renewed just before its lease ends
    gate = a_gate("conc")
    holder_run, other = gated(store, (gate, 1)), gated(store, (gate, 1))
    assert status_of(store, holder_run, token="th") == "ok"
    assert store.renew(holder_run, "th", now=NOW + LEASE_MS - 1, lease_ms=LEASE_MS) is True

    # then the place is still taken after the first lease, and free after the renewed one
    assert status_of(store, other, now=NOW + LEASE_MS + 1) == "limited"
    assert status_of(store, other, now=NOW + 2 * LEASE_MS) == "ok"


def test_a_freed_place_wakes_the_run_at_the_head_of_the_queue(store) -> None:
    # given a full gate and a run waiting for it (its retry timer a second ahead)
    gate = a_gate("conc")
    running, waiting = gated(store, (gate, 1)), gated(store, (gate, 1))
    assert status_of(store, running, token="tr") == "ok"
    assert status_of(store, waiting) == "limited"
    claimed(store, NOW)  # (the running run's own timer is not the point)

    # when the running run suspends
    store.suspend(running, "tr", Suspension("sleeping", FAR_FUTURE))

    # then the waiting run is due at once, not a second later
    assert run_member(waiting) in claimed(store, NOW)


def test_a_free_place_goes_to_the_head_of_the_queue_not_to_a_later_run(store) -> None:
    # given two runs waiting for a full gate, the first created first
    gate = a_gate("conc")
    running = gated(store, (gate, 1))
    first, second = gated(store, (gate, 1)), gated(store, (gate, 1), created_at=NOW + 5)
    assert status_of(store, running, token="tr") == "ok"
    assert [status_of(store, r) for r in (first, second)] == ["limited", "limited"]

    store.finish(running, "tr", Outcome("completed", NOW + 10, "1"), retention_ms=RETENTION_MS)

    # then the later run asking first is refused: the place is owed to the head
    assert status_of(store, second, now=NOW + 20) == "limited"
    assert status_of(store, first, now=NOW + 30) == "ok"


def test_a_higher_priority_run_overtakes_runs_queued_before_it(store) -> None:
    # given a full gate with a low-priority backlog queued at NOW
    gate = a_gate("conc")
    running = gated(store, (gate, 1))
    assert status_of(store, running, token="tr") == "ok"
    backlog = [gated(store, (gate, 1)) for _ in range(3)]
    assert {status_of(store, r) for r in backlog} == {"limited"}
    # and a run created 5 s later with a priority of 10 s
    urgent = gated(store, (gate, 1), created_at=NOW + 5_000, priority_ms=10_000)
    assert status_of(store, urgent, now=NOW + 5_000) == "limited"

    # when the place frees, then it goes to the urgent run, as if queued 10 s earlier
    store.suspend(running, "tr", Suspension("sleeping", FAR_FUTURE))
    assert run_member(urgent) in claimed(store, NOW + 5_000)
    assert [status_of(store, r, now=NOW + 5_001) for r in backlog] == ["limited"] * 3
    assert status_of(store, urgent, now=NOW + 5_002) == "ok"


def test_a_negative_priority_queues_a_run_behind_later_ones(store) -> None:
    gate = a_gate("conc")
    running = gated(store, (gate, 1))
    assert status_of(store, running, token="tr") == "ok"
    late = gated(store, (gate, 1), priority_ms=-60_000)
    on_time = gated(store, (gate, 1), created_at=NOW + 1_000)
    assert [status_of(store, r, now=NOW + 1_000) for r in (late, on_time)] == ["limited"] * 2

    store.release(running, "tr")

    assert status_of(store, late, now=NOW + 1_001) == "limited"
    assert status_of(store, on_time, now=NOW + 1_002) == "ok"


def test_a_waiter_that_does_not_come_back_loses_its_turn(store) -> None:
    # given a run at the head of the queue that never asks again (its process died)
    gate = a_gate("conc")
    running, gone, later = (gated(store, (gate, 1), created_at=NOW + i) for i in range(3))
    assert status_of(store, running, token="tr") == "ok"
    assert [status_of(store, r) for r in (gone, later)] == ["limited", "limited"]
    store.release(running, "tr")

    # then the next run waits for it only until the grace after its retry passed
    assert status_of(store, later, now=NOW + CONCURRENCY_RETRY_MS) == "limited"
    forgotten = NOW + CONCURRENCY_RETRY_MS + WAITER_GRACE_MS
    assert status_of(store, later, now=forgotten + 1) == "ok"


def test_a_run_with_two_gates_needs_a_place_in_each_and_keeps_none_when_refused(store) -> None:
    # given a function-wide gate of 2 and a per-key gate of 1
    wide, per_key = a_gate("conc"), a_gate("conc")
    first = gated(store, (wide, 2), (per_key, 1))
    second = gated(store, (wide, 2), (per_key, 1), created_at=NOW + 1)
    assert status_of(store, first) == "ok"

    # when a second run of the same key asks, then the key's gate refuses it
    assert status_of(store, second) == "limited"
    # and it kept no place in the wide gate: another key's run takes the second place
    other_key = gated(store, (wide, 2), created_at=NOW + 2)
    assert status_of(store, other_key) == "ok"
    assert status_of(store, gated(store, (wide, 2), created_at=NOW + 3)) == "limited"


def test_a_gate_shared_by_two_functions_counts_the_runs_of_both(store) -> None:
    shared = a_gate("env")
    one = gated(store, (shared, 1), function_id="shop/one")
    two = gated(store, (shared, 1), function_id="shop/two")

    assert status_of(store, one, token="t1") == "ok"
    assert status_of(store, two) == "limited"
    store.finish(one, "t1", Outcome("completed", NOW, "1"), retention_ms=RETENTION_MS)
    assert status_of(store, two) == "ok"


def test_a_run_taken_over_after_its_holder_died_keeps_its_place(store) -> None:
    # given the only place held by a run whose process died
    gate = a_gate("conc")
    run_id = gated(store, (gate, 1))
    dead = f"tok-dead@proc-{uuid.uuid4().hex[:6]}"
    store.beat(dead.partition("@")[2], ttl_ms=1, holding=[])
    assert acquire(store, run_id, dead, now=NOW, lease_ms=LEASE_MS)[0] == "ok"
    store.reap(dead.partition("@")[2])

    # when another execution takes it over, then it gets the run and its place
    status, record = acquire(store, run_id, "tok-new", now=NOW + 10, lease_ms=LEASE_MS)
    assert status == "ok" and record is not None and record.crashes == 1
    assert status_of(store, gated(store, (gate, 1)), now=NOW + 20) == "limited"


def test_rate_admission_refuses_beyond_the_limit_within_the_period(store) -> None:
    gate = a_gate("rate")

    def admit(now: int) -> bool:
        return store.admit_rate(gate, limit=2, period_ms=1_000, now=now)

    assert [admit(NOW), admit(NOW + 10), admit(NOW + 20)] == [True, True, False]
    assert admit(NOW + 1_001) is True  # the first admission left the window


def throttled(store, gate: ThrottleGate, *, created_at: int = NOW, priority_ms: int = 0,
              join: bool = True) -> tuple[str, int]:
    """A run queued in a throttle gate as routing queues it: (run id, its start delay)."""
    run_id = new_id()
    delay = store.join_throttle(gate, function_id="shop/checkout", run_id=run_id,
                                score=created_at - priority_ms, now=created_at) if join else 0
    create(store, run_id, throttle=gate, created_at=created_at, priority_ms=priority_ms)
    return run_id, delay


def test_throttle_spaces_starts_and_allows_a_burst(store) -> None:
    gate = ThrottleGate(a_gate("throttle"), limit=2, period_ms=1_000, burst=2)

    delays = [throttled(store, gate)[1] for _ in range(4)]

    assert delays == [0, 0, 500, 1_000]


def test_a_throttled_start_takes_its_slot_when_acquired_and_waits_otherwise(store) -> None:
    # given a throttle of one start per 10 s, and two runs queued at once
    gate = ThrottleGate(a_gate("throttle"), limit=1, period_ms=10_000)
    (first, d1), (second, d2) = throttled(store, gate), throttled(store, gate)
    assert (d1, d2) == (0, 10_000)

    # then the first starts; the second, asked too early, waits and is due at its slot
    assert status_of(store, first) == "ok"
    assert status_of(store, second, now=NOW + 4_000) == "limited"
    assert run_member(second) not in claimed(store, NOW + 9_999)
    assert status_of(store, second, now=NOW + 10_000) == "ok"


def test_a_throttle_counts_a_runs_first_start_only(store) -> None:
    gate = ThrottleGate(a_gate("throttle"), limit=1, period_ms=3_600_000)
    run_id, _ = throttled(store, gate)
    assert status_of(store, run_id, token="t1") == "ok"
    store.suspend(run_id, "t1", Suspension("sleeping", NOW + 1_000))

    assert status_of(store, run_id, now=NOW + 1_000) == "ok"  # resuming is not starting


def test_a_higher_priority_run_takes_the_next_throttle_slot(store) -> None:
    # given a throttle whose slot is used, and a run queued for the next slot
    gate = ThrottleGate(a_gate("throttle"), limit=1, period_ms=10_000)
    first, _ = throttled(store, gate)
    assert status_of(store, first) == "ok"
    low, low_delay = throttled(store, gate)
    # when a run with a priority of 60 s is queued after it
    high, high_delay = throttled(store, gate, created_at=NOW + 1_000, priority_ms=60_000)

    # then the high one gets the next slot and the low one the one after
    assert (low_delay, high_delay) == (10_000, 9_000)
    assert status_of(store, low, now=NOW + 10_000) == "limited"
    assert status_of(store, high, now=NOW + 10_000) == "ok"
    assert status_of(store, low, now=NOW + 20_000) == "ok"


def test_cancelling_a_throttled_run_gives_its_turn_to_the_next(store) -> None:
    gate = ThrottleGate(a_gate("throttle"), limit=1, period_ms=10_000)
    first, _ = throttled(store, gate)
    assert status_of(store, first) == "ok"
    doomed, _ = throttled(store, gate)
    after, delay = throttled(store, gate)
    assert delay == 20_000

    store.cancel(doomed, now=NOW + 1, reason="no", retention_ms=RETENTION_MS)

    assert status_of(store, after, now=NOW + 10_000) == "ok"


@pytest.mark.parametrize("skipped", [(), (Skip("f", "rate_limited"),)])
def test_skipped_starts_are_recorded_with_the_routing(store, skipped) -> None:
    event_id = new_id("evt")
    assert store.skipped_starts(event_id) == []

    store.complete_routing(event_id, ["run-a"], ttl_ms=60_000, skipped=skipped)

    assert store.skipped_starts(event_id) == list(skipped)


def test_a_second_routing_adds_the_skips_of_functions_not_recorded_yet(store) -> None:
    event_id = new_id("evt")
    store.complete_routing(event_id, [], ttl_ms=60_000,
                           skipped=(Skip("f", "singleton", "run-1"),))
    store.complete_routing(event_id, [], ttl_ms=60_000,
                           skipped=(Skip("f", "rate_limited"), Skip("g", "batched", "run-2")))

    assert store.skipped_starts(event_id) == [Skip("f", "singleton", "run-1"),
                                              Skip("g", "batched", "run-2")]


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
