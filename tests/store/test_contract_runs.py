"""StateStore contract: runs, leases, checkpoints, suspension, finish, release, cancel.

Runs on every store (the ``store`` fixture is parametrized over memory and redis).
"""

from __future__ import annotations

import json
import time

import pytest

from celery_steps.store.base import (
    BUSY_MARGIN_MS,
    BUSY_RECHECK_MS,
    NOTIFY_SAFETY_MS,
    ConcurrencyGate,
    NewRun,
    Outcome,
    Suspension,
)
from tests.conftest import wait_until
from tests.store._support import (
    FUNCTION,
    LEASE_MS,
    NOW,
    RETENTION_MS,
    acquire,
    acquire_branch,
    assert_due_exactly_at,
    assert_not_scheduled,
    blocked_waiters,
    claimed,
    create,
    finished,
    holder,
    leased,
    new_id,
    run_member,
    suspended_waiting,
    unstamped,
    wait_step,
    waiter,
)

DONE = {"op": "run", "pos": 0, "status": "completed", "result": {"n": 1}}


# -- create / load / list ---------------------------------------------------------------
def test_create_run_stores_a_queued_run_with_its_metadata(store) -> None:
    run_id = new_id()
    run = NewRun(id=run_id, function_id=FUNCTION, event_ids=["e1", "e2"], created_at=NOW,
                 events=[{"name": "shop/order.paid", "data": {"order": 7}}],
                 parent={"run_id": "parent-1", "step": "invoke"})
    assert store.create_run(run) is True

    record = store.load_run(run_id)
    assert record is not None
    assert (record.id, record.function_id, record.status) == (run_id, FUNCTION, "queued")
    assert record.created_at == NOW
    assert record.event_ids == ["e1", "e2"]
    assert record.events == [{"name": "shop/order.paid", "data": {"order": 7}}]
    assert record.parent == {"run_id": "parent-1", "step": "invoke"}
    assert (record.attempt, record.steps) == (0, {})
    assert (record.ended_at, record.output, record.error) == (None, None, None)


def test_create_run_with_an_existing_id_is_refused_and_changes_nothing(store) -> None:
    run_id = create(store, event_ids=["first"])
    again = NewRun(id=run_id, function_id="other/fn", event_ids=["second"], created_at=NOW + 9)
    assert store.create_run(again) is False

    record = store.load_run(run_id)
    assert (record.function_id, record.event_ids, record.created_at) == (
        FUNCTION, ["first"], NOW)


def test_create_run_with_start_by_arms_the_watchdog_timer(store) -> None:
    run_id = create(store, start_by=NOW + 1_000)
    assert_due_exactly_at(store, run_member(run_id), NOW + 1_000)


def test_create_run_without_start_by_arms_no_timer(store) -> None:
    run_id = create(store)
    assert_not_scheduled(store, run_member(run_id))


def test_create_run_registers_its_waiters(store) -> None:
    run_id = new_id()
    w = waiter(run_id, "cancel")
    create(store, run_id, waiters=(w,))
    assert unstamped(store.find_waiters(w.event_name, {})) == [w]


def test_load_run_of_an_unknown_id_is_none(store) -> None:
    assert store.load_run(new_id()) is None


def test_list_runs_returns_newest_first(store) -> None:
    old = create(store, created_at=NOW)
    new = create(store, created_at=NOW + 2)
    mid = create(store, created_at=NOW + 1)
    ids = [r.id for r in store.list_runs(function_id=None, status=None, limit=10)]
    assert ids == [new, mid, old]


def test_list_runs_respects_the_limit(store) -> None:
    runs = [create(store, created_at=NOW + i) for i in range(5)]
    ids = [r.id for r in store.list_runs(function_id=None, status=None, limit=2)]
    assert ids == [runs[4], runs[3]]


def test_list_runs_pages_with_a_cursor_past_the_last_run_seen(store) -> None:
    # given five runs, two of them created in the same millisecond
    runs = [create(store, created_at=NOW + i) for i in range(4)]
    twin = create(store, created_at=NOW + 2)
    everything = [r.id for r in store.list_runs(function_id=None, status=None, limit=10)]

    # when reading two at a time, each page starting after the last run of the previous one
    pages: list[list[str]] = []
    cursor = None
    while True:
        page = store.list_runs(function_id=None, status=None, limit=2, before=cursor)
        if not page:
            break
        pages.append([r.id for r in page])
        cursor = (page[-1].created_at, page[-1].id)

    # then the pages are the full listing in order, each run once
    assert [run_id for page in pages for run_id in page] == everything
    assert set(everything) == {*runs, twin} and len(pages) == 3


def test_list_runs_filters_by_function(store) -> None:
    a = create(store, function_id="fn/a", created_at=NOW)
    create(store, function_id="fn/b", created_at=NOW + 1)
    a2 = create(store, function_id="fn/a", created_at=NOW + 2)
    ids = [r.id for r in store.list_runs(function_id="fn/a", status=None, limit=10)]
    assert ids == [a2, a]


def test_list_runs_filters_by_status(store) -> None:
    queued = create(store, created_at=NOW)
    done = finished(store, created_at=NOW + 1)
    running, _ = leased(store, created_at=NOW + 2)
    assert [r.id for r in store.list_runs(function_id=None, status="queued", limit=10)] == [
        queued]
    assert [r.id for r in store.list_runs(function_id=None, status="completed", limit=10)] == [
        done]
    assert [r.id for r in store.list_runs(function_id=None, status="running", limit=10)] == [
        running]


@pytest.mark.parametrize("others", ["newer runs of another function", "its own other runs"])
def test_list_runs_finds_a_functions_runs_in_a_status_behind_many_others(store,
                                                                         others: str) -> None:
    # given two completed runs of fn/a, behind 120 newer completed runs of fn/b, or behind
    # 130 newer queued runs of fn/a itself (either index may be the one paged)
    wanted = [finished(store, function_id="fn/a", created_at=NOW + i) for i in range(2)]
    for i in range(120 if others.startswith("newer") else 130):
        if others.startswith("newer"):
            finished(store, function_id="fn/b", created_at=NOW + 10 + i)
        else:
            create(store, function_id="fn/a", created_at=NOW + 10 + i)
    # when listing fn/a's completed runs, then both are found, newest first
    found = store.list_runs(function_id="fn/a", status="completed", limit=10)
    assert [r.id for r in found] == wanted[::-1]


def test_list_runs_filters_by_function_and_status_together(store) -> None:
    create(store, function_id="fn/a", created_at=NOW)
    wanted = finished(store, function_id="fn/a", created_at=NOW + 1)
    finished(store, function_id="fn/b", created_at=NOW + 2)
    found = store.list_runs(function_id="fn/a", status="completed", limit=10)
    assert [r.id for r in found] == [wanted]


# -- acquire / renew ----------------------------------------------------------------------
def test_acquire_marks_the_run_running_and_returns_its_state(store) -> None:
    run_id = create(store)
    status, record = acquire(store, run_id, "tok-1", now=NOW, lease_ms=LEASE_MS)
    assert status == "ok"
    assert (record.id, record.status) == (run_id, "running")
    assert store.load_run(run_id).status == "running"


def test_acquire_returns_the_checkpointed_steps(store) -> None:
    # given a run that checkpointed a step and suspended
    run_id, token = leased(store)
    store.save_step(run_id, token, "fetch", DONE)
    store.suspend(run_id, token, Suspension("queued", NOW))
    # when another worker acquires it, then it sees the step
    status, record = acquire(store, run_id, "tok-2", now=NOW + 1, lease_ms=LEASE_MS)
    assert status == "ok"
    assert record.steps == {"fetch": DONE}


def test_acquire_arms_a_watchdog_one_lease_ahead(store) -> None:
    run_id, _ = leased(store, now=NOW)
    assert_due_exactly_at(store, run_member(run_id), NOW + LEASE_MS)


def test_acquire_of_a_run_held_by_a_live_process_is_busy(store) -> None:
    run_id, _ = leased(store)
    assert acquire(store, run_id, "tok-2@elsewhere", now=NOW + 1, lease_ms=LEASE_MS) == (
        "busy", None)


def test_a_busy_acquire_looks_again_soon_and_a_live_holders_renewal_pushes_it_back(
    store,
) -> None:
    # given a run held by a live process, its watchdog a lease ahead
    run_id, token = leased(store, now=NOW)
    # when another delivery finds it busy
    assert acquire(store, run_id, "tok-2@elsewhere", now=NOW + 1)[0] == "busy"
    # then the run looks again within the busy recheck (in case the holder just died)
    assert_due_exactly_at(store, run_member(run_id), NOW + 1 + BUSY_RECHECK_MS + BUSY_MARGIN_MS)
    # and while the holder lives, its heartbeat's renewal pushes that back to a lease ahead
    assert store.renew(run_id, token, now=NOW + 100, lease_ms=LEASE_MS) is True
    assert_due_exactly_at(store, run_member(run_id), NOW + 100 + LEASE_MS)


def test_acquire_takes_over_a_run_whose_holder_process_died_and_counts_a_crash(store) -> None:
    # given a run held by a process that then died (its key reaped)
    run_id, dead = leased(store)
    store.save_step(run_id, dead, "fetch", DONE)
    store.reap(dead.partition("@")[2])
    # when another worker acquires it
    status, record = acquire(store, run_id, "tok-2@alive", now=NOW + 1, lease_ms=LEASE_MS)
    # then it takes over, sees one crash and the checkpointed step
    assert status == "ok" and record.crashes == 1 and record.steps == {"fetch": DONE}
    # and the dead holder's late writes are refused
    assert store.save_step(run_id, dead, "next", DONE) == ("lost", None)


def test_a_checkpoint_resets_the_crash_count(store) -> None:
    run_id, dead = leased(store)
    store.reap(dead.partition("@")[2])
    second = holder(store, "tok-2")
    assert acquire(store, run_id, second, now=NOW + 1, lease_ms=LEASE_MS)[1].crashes == 1
    store.save_step(run_id, second, "fetch", DONE)
    assert store.load_run(run_id).crashes == 0


def test_a_holder_whose_process_key_lapsed_unreplaced_still_checkpoints(store) -> None:
    # given a holder whose process key lapsed (a long pause) but whom nobody replaced
    run_id, slow = leased(store)
    store.reap(slow.partition("@")[2])
    # when it checkpoints, then the checkpoint is accepted: it is still the holder
    assert store.save_step(run_id, slow, "fetch", DONE) == ("ok", None)
    assert store.load_run(run_id).steps == {"fetch": DONE}


def test_acquire_of_an_unknown_run_is_missing(store) -> None:
    assert acquire(store, new_id(), "tok-1", now=NOW, lease_ms=LEASE_MS) == ("missing", None)


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_acquire_of_a_finished_run_is_ended(store, status) -> None:
    # given a finished run whose notifications were confirmed
    run_id = finished(store, status)
    store.notified(run_id)
    assert acquire(store, run_id, "tok-2", now=NOW + 100, lease_ms=LEASE_MS) == ("ended", None)


def test_acquire_of_a_cancelled_run_is_ended(store) -> None:
    run_id = create(store)
    store.cancel(run_id, now=NOW, reason="stop", retention_ms=RETENTION_MS)
    store.notified(run_id)
    assert acquire(store, run_id, "tok-1", now=NOW + 1, lease_ms=LEASE_MS) == ("ended", None)


@pytest.mark.parametrize("end", ["finish", "cancel"])
def test_an_ended_run_keeps_its_outbox_until_its_notifications_are_confirmed(
    store, end
) -> None:
    # given a run that just ended
    if end == "finish":
        run_id = finished(store)
        ended_at = NOW + 50
    else:
        run_id = create(store)
        store.cancel(run_id, now=NOW, reason="stop", retention_ms=RETENTION_MS)
        ended_at = NOW
    # then its timer is armed to redo the notifications, and acquire hands back the run
    assert_due_exactly_at(store, run_member(run_id), ended_at + NOTIFY_SAFETY_MS)
    status, record = acquire(store, run_id, "tok-2", now=NOW + 100, lease_ms=LEASE_MS)
    assert status == "ended" and record is not None and record.notify is True
    # when the notifications are confirmed, then the outbox and its timer are gone
    store.notified(run_id)
    assert store.load_run(run_id).notify is False
    assert_not_scheduled(store, run_member(run_id))


def test_busy_acquire_sets_the_wake_flag_so_the_holder_replays(store) -> None:
    # given a worker holding the run
    run_id, token = leased(store)
    # when another delivery of the run finds it busy
    assert acquire(store, run_id, "tok-2@other", now=NOW + 1, lease_ms=LEASE_MS)[0] == "busy"
    # then the holder's suspend returns True: it keeps the lease and replays
    assert store.suspend(run_id, token, Suspension("sleeping", NOW + 60_000)) is True
    assert store.load_run(run_id).status == "running"
    assert store.save_step(run_id, token, "fetch", DONE) == ("ok", None)
    # and the flag is consumed: the next suspend really suspends
    assert store.suspend(run_id, token, Suspension("sleeping", NOW + 60_000)) is False
    assert store.load_run(run_id).status == "sleeping"


def test_renew_by_the_holder_extends_the_lease_and_moves_the_watchdog(store) -> None:
    run_id, token = leased(store, now=NOW)
    assert store.renew(run_id, token, now=NOW + 10_000, lease_ms=LEASE_MS) is True
    assert_due_exactly_at(store, run_member(run_id), NOW + 10_000 + LEASE_MS)


def test_renew_after_cancel_fails_and_does_not_take_back_the_concurrency_place(store) -> None:
    # given a running run holding the only place of its concurrency gate, then cancelled
    gate = f"gate-conc-{{{new_id()}}}"
    run_id, token = leased(store, concurrency=(ConcurrencyGate(gate, 1),))
    store.cancel(run_id, now=NOW + 1, reason="stop", retention_ms=RETENTION_MS)
    # when its holder's heartbeat renews it
    assert store.renew(run_id, token, now=NOW + 2, lease_ms=LEASE_MS) is False
    # then another run of the gate can start
    other = create(store, concurrency=(ConcurrencyGate(gate, 1),))
    assert acquire(store, other, holder(store, "tok-2"), now=NOW + 3, lease_ms=LEASE_MS)[0] == "ok"


def test_renew_with_a_wrong_token_fails(store) -> None:
    run_id, _ = leased(store)
    assert store.renew(run_id, "intruder", now=NOW + 1, lease_ms=LEASE_MS) is False


def test_renew_after_release_fails(store) -> None:
    run_id, token = leased(store)
    store.release(run_id, token)
    assert store.renew(run_id, token, now=NOW + 1, lease_ms=LEASE_MS) is False


# -- save_step ----------------------------------------------------------------------------
def test_save_step_under_the_lease_checkpoints_the_state(store) -> None:
    run_id, token = leased(store)
    assert store.save_step(run_id, token, "fetch", DONE) == ("ok", None)
    assert store.load_run(run_id).steps == {"fetch": DONE}


def test_save_step_overwrites_a_non_final_state(store) -> None:
    run_id, token = leased(store)
    store.save_step(run_id, token, "fetch", {"op": "run", "pos": 0, "status": "retrying",
                                              "attempts": 1})
    assert store.save_step(run_id, token, "fetch", DONE) == ("ok", None)
    assert store.load_run(run_id).steps["fetch"] == DONE


@pytest.mark.parametrize("final", ["completed", "failed"])
def test_save_step_keeps_the_first_final_state(store, final) -> None:
    # given a step whose final state is stored
    run_id, token = leased(store)
    first = {"op": "run", "pos": 0, "status": final, "result": 1}
    store.save_step(run_id, token, "fetch", first)
    # when a second final state is written
    second = {"op": "run", "pos": 0, "status": "completed", "result": 2}
    # then the write is refused and the stored one returned
    assert store.save_step(run_id, token, "fetch", second) == ("exists", first)
    assert store.load_run(run_id).steps["fetch"] == first


def test_save_step_with_a_wrong_token_is_lost(store) -> None:
    run_id, _ = leased(store)
    assert store.save_step(run_id, "intruder", "fetch", DONE) == ("lost", None)
    assert store.load_run(run_id).steps == {}


def test_save_step_after_the_lease_moved_on_is_lost(store) -> None:
    # given worker 1 released and worker 2 holds the lease
    run_id, old = leased(store)
    store.release(run_id, old)
    acquire(store, run_id, "tok-2", now=NOW + 1, lease_ms=LEASE_MS)
    # then worker 1's checkpoint is refused
    assert store.save_step(run_id, old, "fetch", DONE) == ("lost", None)
    assert "fetch" not in store.load_run(run_id).steps


def test_save_step_on_an_unknown_run_is_lost(store) -> None:
    assert store.save_step(new_id(), "tok-1", "fetch", DONE) == ("lost", None)


def test_save_step_after_cancel_is_cancelled(store) -> None:
    run_id, token = leased(store)
    store.cancel(run_id, now=NOW + 1, reason="stop", retention_ms=RETENTION_MS)
    assert store.save_step(run_id, token, "fetch", DONE) == ("cancelled", None)
    assert store.load_run(run_id).steps == {}


# -- suspend ------------------------------------------------------------------------------
def test_suspend_with_a_timer_records_the_state_and_arms_the_timer(store) -> None:
    run_id, token = leased(store)
    sleep = {"op": "sleep", "pos": 0, "status": "sleeping", "wake_at": NOW + 60_000}
    suspension = Suspension("sleeping", NOW + 60_000, step_key="nap", step_state=sleep)
    assert store.suspend(run_id, token, suspension) is False

    record = store.load_run(run_id)
    assert record.status == "sleeping"
    assert record.steps == {"nap": sleep}
    assert_due_exactly_at(store, run_member(run_id), NOW + 60_000)


def test_suspend_releases_the_lease(store) -> None:
    run_id, token = leased(store)
    store.suspend(run_id, token, Suspension("sleeping", NOW + 60_000))
    assert acquire(store, run_id, "tok-2", now=NOW + 1, lease_ms=LEASE_MS)[0] == "ok"
    assert store.save_step(run_id, token, "fetch", DONE) == ("lost", None)


def test_suspend_with_waiters_registers_them(store) -> None:
    run_id, w = suspended_waiting(store, wake_at=NOW + 3_600_000)
    record = store.load_run(run_id)
    assert record.status == "waiting"
    assert record.steps["wait"] == wait_step(NOW + 3_600_000)
    assert unstamped(store.find_waiters(w.event_name, {"data": {}})) == [w]
    assert_due_exactly_at(store, run_member(run_id), NOW + 3_600_000)


def test_suspend_without_a_wake_time_disarms_the_run_timer(store) -> None:
    # given a leased run (watchdog armed)
    run_id, token = leased(store)
    # when it suspends with no wake-up (a wait without timeout)
    assert store.suspend(run_id, token, Suspension("waiting", None,
                                                  waiters=(waiter(run_id),))) is False
    # then no timer wakes it
    assert_not_scheduled(store, run_member(run_id))


def test_suspend_records_the_attempt_for_a_retry(store) -> None:
    run_id, token = leased(store)
    assert store.suspend(run_id, token, Suspension("queued", NOW + 5_000, attempt=2)) is False
    record = store.load_run(run_id)
    assert (record.status, record.attempt) == ("queued", 2)


def test_suspend_keeps_a_final_step_state_resolved_meanwhile(store) -> None:
    # given an event resolved the wait while the run was still executing
    run_id, token = leased(store)
    resolved = {"status": "completed", "result": {"order": 7}}
    assert store.resolve_step(run_id, "wait", resolved, wake_at=NOW + 1) is True
    # when the holder suspends with its (stale) waiting state for that step
    result = store.suspend(run_id, token, Suspension(
        "waiting", NOW + 60_000, step_key="wait", step_state=wait_step(NOW + 60_000)))
    # then it is told to replay and the final state is kept
    assert result is True
    assert store.load_run(run_id).steps["wait"] == resolved


def test_suspend_with_a_wrong_token_is_none_and_changes_nothing(store) -> None:
    run_id, _ = leased(store)
    suspension = Suspension("sleeping", NOW + 60_000, step_key="nap",
                            step_state={"op": "sleep", "pos": 0, "status": "sleeping"})
    assert store.suspend(run_id, "intruder", suspension) is None
    record = store.load_run(run_id)
    assert (record.status, record.steps) == ("running", {})


def test_suspend_after_cancel_is_none(store) -> None:
    run_id, token = leased(store)
    store.cancel(run_id, now=NOW + 1, reason="stop", retention_ms=RETENTION_MS)
    assert store.suspend(run_id, token, Suspension("sleeping", NOW + 60_000)) is None
    assert store.load_run(run_id).status == "cancelled"
    # only the outbox timer (the cancel's notifications) is armed, not the sleep
    assert_due_exactly_at(store, run_member(run_id), NOW + 1 + NOTIFY_SAFETY_MS)


# -- finish -------------------------------------------------------------------------------
def test_finish_under_the_lease_ends_the_run_with_its_output(store) -> None:
    run_id, token = leased(store)
    outcome = Outcome("completed", NOW + 99, '{"total": 42, "items": [1, 2]}')
    assert store.finish(run_id, token, outcome, retention_ms=RETENTION_MS) is True
    record = store.load_run(run_id)
    assert (record.status, record.ended_at) == ("completed", NOW + 99)
    assert record.output == {"total": 42, "items": [1, 2]}
    assert record.error is None


def test_finish_as_failed_stores_the_error(store) -> None:
    run_id, token = leased(store)
    error = {"name": "ValueError", "message": "bad order"}
    assert store.finish(run_id, token, Outcome("failed", NOW + 5, None, error),
                        retention_ms=RETENTION_MS) is True
    record = store.load_run(run_id)
    assert (record.status, record.error, record.output) == ("failed", error, None)


def test_finish_lets_go_of_the_run_and_its_timer_only_redoes_the_notifications(store) -> None:
    run_id, token = leased(store)
    store.finish(run_id, token, Outcome("completed", NOW + 50, "1", None),
                 retention_ms=RETENTION_MS)
    assert store.renew(run_id, token, now=NOW + 100, lease_ms=LEASE_MS) is False
    assert_due_exactly_at(store, run_member(run_id), NOW + 50 + NOTIFY_SAFETY_MS)
    store.notified(run_id)
    assert_not_scheduled(store, run_member(run_id))


def test_finish_drops_the_runs_waiters(store) -> None:
    # given a run that registered a waiter and was woken
    run_id, w = suspended_waiting(store)
    acquire(store, run_id, "tok-2", now=NOW + 1, lease_ms=LEASE_MS)
    # when it finishes, then its waiter is gone
    store.finish(run_id, "tok-2", Outcome("completed", NOW + 2), retention_ms=RETENTION_MS)
    assert unstamped(store.find_waiters(w.event_name, {})) == []


def test_finish_with_a_stale_token_is_refused(store) -> None:
    # given worker 1 lost the lease to worker 2
    run_id, old = leased(store)
    store.release(run_id, old)
    acquire(store, run_id, "tok-2", now=NOW + 1, lease_ms=LEASE_MS)
    # when worker 1 finishes, then it is refused and the run keeps running
    assert store.finish(run_id, old, Outcome("completed", NOW + 2, '"stale"'),
                        retention_ms=RETENTION_MS) is False
    record = store.load_run(run_id)
    assert (record.status, record.output, record.ended_at) == ("running", None, None)
    # and worker 2 still can
    assert store.finish(run_id, "tok-2", Outcome("completed", NOW + 3, '"fresh"'),
                        retention_ms=RETENTION_MS) is True
    assert store.load_run(run_id).output == "fresh"


def test_finish_after_cancel_is_refused(store) -> None:
    run_id, token = leased(store)
    store.cancel(run_id, now=NOW + 1, reason="stop", retention_ms=RETENTION_MS)
    assert store.finish(run_id, token, Outcome("completed", NOW + 2, "1"),
                        retention_ms=RETENTION_MS) is False
    record = store.load_run(run_id)
    assert (record.status, record.output) == ("cancelled", None)


# -- release ------------------------------------------------------------------------------
def test_release_lets_another_worker_acquire(store) -> None:
    run_id, token = leased(store)
    store.release(run_id, token)
    assert acquire(store, run_id, "tok-2", now=NOW + 1, lease_ms=LEASE_MS)[0] == "ok"


def test_release_with_a_wrong_token_keeps_the_lease(store) -> None:
    run_id, token = leased(store)
    store.release(run_id, "intruder")
    assert acquire(store, run_id, "tok-2", now=NOW + 1, lease_ms=LEASE_MS)[0] == "busy"
    assert store.renew(run_id, token, now=NOW + 2, lease_ms=LEASE_MS) is True


# -- cancel -------------------------------------------------------------------------------
def _in_state(store, state: str) -> str:
    if state == "queued":
        return create(store)
    if state in ("completed", "failed"):
        return finished(store, state)
    run_id, token = leased(store)
    if state in ("sleeping", "waiting"):
        assert store.suspend(run_id, token, Suspension(state, NOW + 60_000)) is False
    elif state == "cancelled":
        store.cancel(run_id, now=NOW + 1, reason="first", retention_ms=RETENTION_MS)
    return run_id


@pytest.mark.parametrize("state", ["queued", "running", "sleeping", "waiting"])
def test_cancel_of_a_live_run_returns_its_previous_status_and_ends_it(store, state) -> None:
    run_id = _in_state(store, state)
    assert store.load_run(run_id).status == state
    assert store.cancel(run_id, now=NOW + 500, reason="user asked",
                        retention_ms=RETENTION_MS) == state
    record = store.load_run(run_id)
    assert (record.status, record.ended_at) == ("cancelled", NOW + 500)
    assert record.error == {"name": "Cancelled", "message": "user asked"}


@pytest.mark.parametrize("state", ["completed", "failed", "cancelled"])
def test_cancel_of_an_ended_run_returns_its_status_and_changes_nothing(store, state) -> None:
    run_id = _in_state(store, state)
    before = store.load_run(run_id)
    assert store.cancel(run_id, now=NOW + 500, reason="again",
                        retention_ms=RETENTION_MS) == state
    assert store.load_run(run_id) == before


def test_cancel_of_an_unknown_run_is_none(store) -> None:
    assert store.cancel(new_id(), now=NOW, reason="x", retention_ms=RETENTION_MS) is None


def test_cancel_drops_the_runs_waiters_and_timer(store) -> None:
    # given a run waiting with a waiter and a timeout timer
    run_id, w = suspended_waiting(store, wake_at=NOW + 60_000)
    assert unstamped(store.find_waiters(w.event_name, {})) == [w]
    # when it is cancelled
    store.cancel(run_id, now=NOW + 1, reason="stop", retention_ms=RETENTION_MS)
    # then nothing wakes it any more once its cancellation was notified
    assert unstamped(store.find_waiters(w.event_name, {})) == []
    store.notified(run_id)
    assert_not_scheduled(store, run_member(run_id))


def test_cancel_of_a_queued_run_drops_its_start_watchdog_and_waiters(store) -> None:
    run_id = new_id()
    w = waiter(run_id, "cancel-on", path="data.order", value=7)
    create(store, run_id, start_by=NOW + 1_000, waiters=(w,))
    store.cancel(run_id, now=NOW + 1, reason="stop", retention_ms=RETENTION_MS)
    assert unstamped(store.find_waiters(w.event_name, {"data": {"order": 7}})) == []
    assert_due_exactly_at(store, run_member(run_id), NOW + 1 + NOTIFY_SAFETY_MS)


def test_release_after_a_takeover_leaves_the_new_holder_in_place(store) -> None:
    # given a holder replaced after its process died
    run_id, old = leased(store)
    store.reap(old.partition("@")[2])
    new = holder(store, "tok-2")
    assert acquire(store, run_id, new, now=NOW + 1, lease_ms=LEASE_MS)[0] == "ok"
    # when the old holder, waking up, lets go of the run
    store.release(run_id, old)
    # then the new holder still holds it
    assert store.save_step(run_id, new, "fetch", DONE) == ("ok", None)
    assert acquire(store, run_id, holder(store, "tok-3"), now=NOW + 2,
                         lease_ms=LEASE_MS)[0] == "busy"


# -- parallel branches --------------------------------------------------------------------
def test_a_branch_is_held_by_one_live_execution_at_a_time(store) -> None:
    # given a run whose branch "b" one execution holds
    run_id, _ = leased(store)
    first = holder(store, "branch-1")
    status, record, crashes = acquire_branch(store, run_id, "b", first)
    assert (status, crashes) == ("ok", 0) and record is not None
    # when a re-sent copy of the branch task tries, then it is busy
    assert acquire_branch(store, run_id, "b", holder(store, "branch-2"))[0] == "busy"
    # and another branch of the same run is independent
    assert acquire_branch(store, run_id, "c", holder(store, "branch-3"))[0] == "ok"
    # once the first lets go, a copy may run it
    store.release_branch(run_id, "b", first)
    assert acquire_branch(store, run_id, "b", holder(store, "branch-4"))[0] == "ok"


def test_a_branch_whose_process_died_is_taken_over_and_the_crash_counted(store) -> None:
    run_id, _ = leased(store)
    dead = holder(store, "branch-1")
    acquire_branch(store, run_id, "b", dead)
    store.reap(dead.partition("@")[2])
    status, _, crashes = acquire_branch(store, run_id, "b", holder(store, "branch-2"))
    assert (status, crashes) == ("ok", 1)


def test_a_waiter_registers_after_an_event_received_before_it(store) -> None:
    # given an event received, then a wait stored right after
    event_id = new_id("evt")
    store.put_event(event_id, "{}", route_at=NOW, ttl_ms=60_000)
    _, w = suspended_waiting(store)
    received_at = json.loads(store.get_event(event_id))["received_at"]
    # then, on the store's one clock, the wait began no earlier than the event arrived
    [found] = store.find_waiters(w.event_name, {})
    assert found.registered_at >= received_at


def test_acquire_for_another_function_is_refused_and_changes_nothing(store) -> None:
    # given a queued run of one function
    run_id = create(store, function_id="shop/refund")
    before = store.load_run(run_id)
    # when a message for another function names it
    status, record = store.acquire(run_id, holder(store), function_id="shop/checkout",
                                   now=NOW, lease_ms=LEASE_MS)
    # then it is refused and the run is as it was
    assert (status, record) == ("foreign", None)
    assert store.load_run(run_id) == before
    assert store.acquire_branch(run_id, "b", holder(store), function_id="shop/checkout")[0] == (
        "foreign")


def test_reaping_a_dead_process_wakes_the_runs_it_held_at_once(store) -> None:
    # given a process holding a run, whose heartbeat said so
    proc = f"proc-{new_id()}"
    store.beat(proc, ttl_ms=3_600_000, holding=[])
    run_id, _ = leased(store, token=f"tok@{proc}")
    store.beat(proc, ttl_ms=3_600_000, holding=[run_member(run_id)])
    assert run_member(run_id) not in claimed(store, NOW + 1)
    # when it is found dead
    store.reap(proc)
    # then its run is due now, and taken over by the next acquire
    assert run_member(run_id) in claimed(store, NOW + 1)
    assert acquire(store, run_id, holder(store, "tok-2"), now=NOW + 2)[0] == "ok"


def test_another_process_beating_for_one_only_extends_its_key(store, aging_clock) -> None:
    # given a process whose own key lives 30 s, then beaten for by its parent, holding nothing new
    proc = f"proc-{new_id()}"
    store.beat(proc, ttl_ms=30_000, holding=[])
    run_id, _ = leased(store, token=f"tok@{proc}")
    aging_clock.advance(25)
    store.beat(proc, ttl_ms=30_000)
    # then it is alive well past its own 30 s
    aging_clock.advance(25)
    assert acquire(store, run_id, holder(store, "tok-2"), now=NOW + 1)[0] == "busy"
    # while a parent's beat for a process that never beat creates nothing
    ghost = f"proc-{new_id()}"
    store.beat(ghost, ttl_ms=30_000)
    other, _ = leased(store, token=f"tok@{ghost}")
    assert acquire(store, other, holder(store, "tok-3"), now=NOW + 1)[0] == "ok"


def test_waiters_registered_before_suspending_are_found_and_fenced(store) -> None:
    # given a held run that registers its wait's waiter before suspending
    run_id, token = leased(store)
    w = waiter(run_id)
    assert store.begin_wait(run_id, token, "wait", wait_step(NOW + 60_000), (w,)) is True
    # then an event finds it at once, and resolving it completes the waiting state
    assert unstamped(store.find_waiters(w.event_name, {})) == [w]
    assert store.resolve_step(run_id, "wait", {"status": "completed", "result": 7},
                              wake_at=NOW + 1) is True
    assert store.load_run(run_id).steps["wait"] == {**wait_step(NOW + 60_000),
                                                     "status": "completed", "result": 7}
    # and a holder replaced meanwhile registers nothing
    stale = holder(store, "stale")
    assert store.begin_wait(run_id, stale, "other", wait_step(), (waiter(run_id, "other"),)) is (
        False)


@pytest.mark.parametrize("end", ["finish", "cancel"])
def test_wait_ended_returns_as_soon_as_the_run_ends(store, end) -> None:
    import threading

    # given a waiter blocked on a running run
    run_id, token = leased(store)
    returned: list[float] = []

    def wait() -> None:
        started = time.monotonic()
        store.wait_ended(run_id, 10.0)
        returned.append(time.monotonic() - started)

    waiter_thread = threading.Thread(target=wait)
    waiter_thread.start()
    wait_until(lambda: blocked_waiters(store, on="ended") == 1, message="the waiter to block")
    # when the run ends
    if end == "finish":
        store.finish(run_id, token, Outcome("completed", NOW + 5, "1"), retention_ms=RETENTION_MS)
    else:
        store.cancel(run_id, now=NOW + 5, reason="stop", retention_ms=RETENTION_MS)
    waiter_thread.join(5)
    # then the waiter was told at once, not after its timeout
    assert returned and returned[0] < 2.0
    # and a later waiter on the ended run returns at once too
    started = time.monotonic()
    store.wait_ended(run_id, 10.0)
    assert time.monotonic() - started < 1.0
