"""StateStore contract: waiter index (find_waiters) and resolve_step. Runs on every store."""

from __future__ import annotations

from celery_steps.store.base import Outcome, Suspension
from tests.store._support import (
    EVENT,
    LEASE_MS,
    NOW,
    RETENTION_MS,
    acquire,
    assert_due_exactly_at,
    claimed,
    create,
    finished,
    leased,
    new_id,
    run_member,
    suspended_waiting,
    unstamped,
    wait_step,
    waiter,
)

RESOLVED = {"status": "completed", "result": {"name": EVENT, "data": {"order": 7}}}


def _waiting_with(store, *waiters_of) -> list:
    """Suspend one run per waiter factory; return the registered waiters."""
    found = []
    for make in waiters_of:
        run_id, token = leased(store)
        w = make(run_id)
        assert store.suspend(run_id, token, Suspension("waiting", None, waiters=(w,))) is False
        found.append(w)
    return found


# -- find_waiters -------------------------------------------------------------------------
def test_find_waiters_without_match_returns_every_waiter_on_the_name(store) -> None:
    w1, w2 = _waiting_with(store, lambda r: waiter(r), lambda r: waiter(r))
    found = unstamped(store.find_waiters(EVENT, {"data": {"anything": 1}}))
    assert sorted(found, key=lambda w: w.run_id) == sorted([w1, w2], key=lambda w: w.run_id)


def test_find_waiters_ignores_waiters_on_another_event_name(store) -> None:
    _waiting_with(store, lambda r: waiter(r, event_name="shop/order.shipped"))
    assert unstamped(store.find_waiters(EVENT, {"data": {}})) == []


def test_find_waiters_round_trips_every_waiter_field(store) -> None:
    run_id, token = leased(store)
    w = waiter(run_id, "wait:2", path="data.order", value=7)
    w = type(w)(**{**w.__dict__, "condition": "event.data.total > 10"})
    store.suspend(run_id, token, Suspension("waiting", None, waiters=(w,)))
    [found] = unstamped(store.find_waiters(EVENT, {"data": {"order": 7}}))
    assert found == w
    assert found.member == f"{run_id}|wait:2"


def test_find_waiters_with_match_returns_only_the_matching_value(store) -> None:
    # given waiters on order 7 and on order 8
    w7, w8 = _waiting_with(store, lambda r: waiter(r, path="data.order", value=7),
                           lambda r: waiter(r, path="data.order", value=8))
    # then an event for order 8 finds only the order-8 waiter, and vice versa
    assert unstamped(store.find_waiters(EVENT, {"data": {"order": 8}})) == [w8]
    assert unstamped(store.find_waiters(EVENT, {"data": {"order": 7}})) == [w7]
    assert unstamped(store.find_waiters(EVENT, {"data": {"order": 9}})) == []


def test_find_waiters_distinguishes_the_number_7_from_the_string_7(store) -> None:
    w_int, w_str = _waiting_with(store, lambda r: waiter(r, path="data.order", value=7),
                                 lambda r: waiter(r, path="data.order", value="7"))
    assert unstamped(store.find_waiters(EVENT, {"data": {"order": 7}})) == [w_int]
    assert unstamped(store.find_waiters(EVENT, {"data": {"order": "7"}})) == [w_str]


def test_find_waiters_matches_an_integral_float_to_the_integer(store) -> None:
    [w] = _waiting_with(store, lambda r: waiter(r, path="data.order", value=7))
    assert unstamped(store.find_waiters(EVENT, {"data": {"order": 7.0}})) == [w]


def test_find_waiters_skips_match_waiters_when_the_event_lacks_the_path(store) -> None:
    _waiting_with(store, lambda r: waiter(r, path="data.order", value=7))
    assert unstamped(store.find_waiters(EVENT, {"data": {"customer": 7}})) == []
    assert unstamped(store.find_waiters(EVENT, {})) == []


def test_find_waiters_matches_long_values_exactly(store) -> None:
    long_a, long_b = "a" * 200, "a" * 199 + "b"
    [w] = _waiting_with(store, lambda r: waiter(r, path="data.token", value=long_a))
    assert unstamped(store.find_waiters(EVENT, {"data": {"token": long_a}})) == [w]
    assert unstamped(store.find_waiters(EVENT, {"data": {"token": long_b}})) == []


def test_find_waiters_matches_structured_values_regardless_of_key_order(store) -> None:
    [w] = _waiting_with(store, lambda r: waiter(r, path="data.key", value={"a": 1, "b": 2}))
    assert unstamped(store.find_waiters(EVENT, {"data": {"key": {"b": 2, "a": 1}}})) == [w]
    assert unstamped(store.find_waiters(EVENT, {"data": {"key": {"a": 1, "b": 3}}})) == []


def test_find_waiters_returns_plain_and_matching_waiters_together(store) -> None:
    plain, on7, _on8 = _waiting_with(store, lambda r: waiter(r),
                                     lambda r: waiter(r, path="data.order", value=7),
                                     lambda r: waiter(r, path="data.order", value=8))
    found = unstamped(store.find_waiters(EVENT, {"data": {"order": 7}}))
    assert sorted(found, key=lambda w: w.run_id) == sorted([plain, on7], key=lambda w: w.run_id)


def test_find_waiters_uses_each_match_path_separately(store) -> None:
    by_order, by_user = _waiting_with(store,
                                      lambda r: waiter(r, path="data.order", value=7),
                                      lambda r: waiter(r, path="data.user.id", value="u1"))
    by_order_event = {"data": {"order": 7, "user": {"id": "u2"}}}
    by_user_event = {"data": {"order": 8, "user": {"id": "u1"}}}
    assert unstamped(store.find_waiters(EVENT, by_order_event)) == [by_order]
    assert unstamped(store.find_waiters(EVENT, by_user_event)) == [by_user]


# -- resolve_step -------------------------------------------------------------------------
def test_resolve_step_merges_into_the_stored_state(store) -> None:
    run_id, _ = suspended_waiting(store, wake_at=NOW + 60_000)
    assert store.resolve_step(run_id, "wait", RESOLVED, wake_at=NOW + 10) is True
    assert store.load_run(run_id).steps["wait"] == {**wait_step(NOW + 60_000), **RESOLVED}


def test_resolve_step_of_a_step_never_stored_stores_the_state(store) -> None:
    run_id, _ = leased(store)
    assert store.resolve_step(run_id, "child", RESOLVED, wake_at=NOW + 10) is True
    assert store.load_run(run_id).steps["child"] == RESOLVED


def test_resolve_step_wins_only_once(store) -> None:
    # given an event and a timeout racing to resolve the same wait
    run_id, _ = suspended_waiting(store)
    assert store.resolve_step(run_id, "wait", RESOLVED, wake_at=NOW + 10) is True
    timeout = {"status": "completed", "result": None}
    # then the second loses and the first outcome stays
    assert store.resolve_step(run_id, "wait", timeout, wake_at=NOW + 11) is False
    assert store.load_run(run_id).steps["wait"]["result"] == RESOLVED["result"]


def test_resolve_step_does_not_overwrite_a_failed_step(store) -> None:
    run_id, token = leased(store)
    failed = {"op": "invoke", "pos": 0, "status": "failed", "error": {"name": "E"}}
    store.save_step(run_id, token, "child", failed)
    assert store.resolve_step(run_id, "child", RESOLVED, wake_at=NOW + 1) is False
    assert store.load_run(run_id).steps["child"] == failed


def test_resolve_step_drops_the_steps_waiter_from_the_index(store) -> None:
    run_id, w = suspended_waiting(store)
    assert unstamped(store.find_waiters(EVENT, {})) == [w]
    store.resolve_step(run_id, "wait", RESOLVED, wake_at=NOW + 10)
    assert unstamped(store.find_waiters(EVENT, {})) == []


def test_resolve_step_keeps_the_waiters_of_other_steps(store) -> None:
    run_id, token = leased(store)
    mine, other = waiter(run_id, "wait"), waiter(run_id, "cancel", event_name="shop/cancel")
    store.suspend(run_id, token, Suspension("waiting", None, waiters=(mine, other)))
    store.resolve_step(run_id, "wait", RESOLVED, wake_at=NOW + 10)
    assert unstamped(store.find_waiters(EVENT, {})) == []
    assert unstamped(store.find_waiters("shop/cancel", {})) == [other]


def test_resolve_step_wakes_the_run_now(store) -> None:
    # given a run waiting with a one-hour timeout
    run_id, _ = suspended_waiting(store, wake_at=NOW + 3_600_000)
    # when an event resolves the wait, then the run timer is due now
    store.resolve_step(run_id, "wait", RESOLVED, wake_at=NOW + 10)
    assert_due_exactly_at(store, run_member(run_id), NOW + 10)


def test_resolve_step_sets_the_wake_flag_of_a_leased_run(store) -> None:
    # given a run still executing when its wait is resolved
    run_id, token = leased(store)
    store.resolve_step(run_id, "wait", RESOLVED, wake_at=NOW + 10)
    # then the holder's suspend replays instead of suspending
    assert store.suspend(run_id, token, Suspension("waiting", NOW + 60_000)) is True
    assert store.load_run(run_id).status == "running"


def test_resolve_step_without_wake_neither_flags_nor_schedules(store) -> None:
    # given a held run whose watchdog is at NOW + LEASE_MS
    run_id, token = leased(store, now=NOW)
    assert store.resolve_step(run_id, "wait", RESOLVED, wake_at=NOW + 10, wake=False) is True
    # then the run timer did not move to now
    assert run_member(run_id) not in claimed(store, NOW + LEASE_MS - 1)
    # and the holder's suspend really suspends
    assert store.suspend(run_id, token, Suspension("sleeping", NOW + 60_000)) is False
    assert store.load_run(run_id).steps["wait"] == RESOLVED


def test_resolve_step_without_wake_leaves_a_waiting_runs_timer_alone(store) -> None:
    run_id, _ = suspended_waiting(store, wake_at=NOW + 60_000)
    store.resolve_step(run_id, "wait", RESOLVED, wake_at=NOW + 10, wake=False)
    assert_due_exactly_at(store, run_member(run_id), NOW + 60_000)


def test_resolve_step_on_a_finished_run_is_false(store) -> None:
    run_id = finished(store)
    assert store.resolve_step(run_id, "wait", RESOLVED, wake_at=NOW + 100) is False
    assert "wait" not in store.load_run(run_id).steps


def test_resolve_step_on_a_cancelled_run_is_false(store) -> None:
    run_id, _ = suspended_waiting(store)
    store.cancel(run_id, now=NOW + 1, reason="stop", retention_ms=RETENTION_MS)
    assert store.resolve_step(run_id, "wait", RESOLVED, wake_at=NOW + 2) is False
    assert store.load_run(run_id).steps["wait"]["status"] == "waiting"


def test_resolve_step_on_an_unknown_run_is_false(store) -> None:
    assert store.resolve_step(new_id(), "wait", RESOLVED, wake_at=NOW) is False


def test_resolve_step_on_a_queued_run_stores_the_state(store) -> None:
    run_id = create(store)
    assert store.resolve_step(run_id, "wait", RESOLVED, wake_at=NOW + 1) is True
    status, record = acquire(store, run_id, "tok-1", now=NOW + 2, lease_ms=LEASE_MS)
    assert (status, record.steps["wait"]) == ("ok", RESOLVED)


def test_a_resolved_run_reacquires_and_finishes(store) -> None:
    # given a resolved wait
    run_id, _ = suspended_waiting(store)
    store.resolve_step(run_id, "wait", RESOLVED, wake_at=NOW + 10)
    # when the woken run is acquired it sees the result and can finish
    status, record = acquire(store, run_id, "tok-2", now=NOW + 11, lease_ms=LEASE_MS)
    assert status == "ok" and record.steps["wait"]["status"] == "completed"
    assert store.finish(run_id, "tok-2", Outcome("completed", NOW + 12, "7"),
                        retention_ms=RETENTION_MS) is True
