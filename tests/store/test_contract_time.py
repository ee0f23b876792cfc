"""StateStore contract: what expires, expires alike on every store, by the clock.

The ``aging_clock`` fixture ages both: the memory store reads it; the Redis keys' TTLs are
shortened by the same amount. So the one suite pins the same TTL semantics on both.
"""

from __future__ import annotations

from celery_steps.store.base import Outcome, Skip
from tests.store._support import (
    LEASE_MS,
    NOW,
    RETENTION_MS,
    acquire,
    envelope_event,
    holder,
    leased,
    new_id,
)

DAY = 24 * 3600 * 1000


def test_an_event_is_forgotten_after_its_ttl_and_its_id_accepted_again(store, aging_clock):
    # given an event kept for a day
    event_id = new_id("evt")
    store.put_event(event_id, '{"n": 1}', route_at=NOW, ttl_ms=DAY)
    # when a day and a second have passed
    aging_clock.advance(DAY / 1000 + 1)
    # then it is gone, and the same id is a new event
    assert store.get_event(event_id) is None
    assert store.put_event(event_id, '{"n": 2}', route_at=NOW, ttl_ms=DAY) is True
    assert envelope_event(store.get_event(event_id)) == '{"n": 2}'


def test_an_event_is_kept_until_its_ttl(store, aging_clock):
    event_id = new_id("evt")
    store.put_event(event_id, "{}", route_at=NOW, ttl_ms=DAY)
    aging_clock.advance(DAY / 1000 - 60)
    assert store.get_event(event_id) is not None


def test_routed_runs_are_forgotten_after_their_ttl(store, aging_clock):
    event_id = new_id("evt")
    store.put_event(event_id, "{}", route_at=NOW, ttl_ms=DAY)
    store.complete_routing(event_id, ["run-a"], ttl_ms=DAY)
    aging_clock.advance(DAY / 1000 + 1)
    assert store.routed_runs(event_id) is None


def test_an_ended_run_is_kept_for_the_retention_then_forgotten(store, aging_clock):
    # given a run that finished, with a retention of a week
    run_id, token = leased(store)
    store.finish(run_id, token, Outcome("completed", NOW + 5, "1"), retention_ms=RETENTION_MS)
    store.notified(run_id)
    # then it is there a day before the end of the retention, and gone after it
    aging_clock.advance(RETENTION_MS / 1000 - 24 * 3600)
    assert store.load_run(run_id) is not None
    aging_clock.advance(24 * 3600 + 1)
    assert store.load_run(run_id) is None
    assert run_id not in [r.id for r in store.list_runs(function_id=None, status=None,
                                                        limit=100)]


def test_a_live_run_never_expires(store, aging_clock):
    run_id, _ = leased(store)
    aging_clock.advance(RETENTION_MS / 1000 * 10)
    assert store.load_run(run_id) is not None


def test_a_process_that_stops_beating_is_dead_after_its_ttl(store, aging_clock):
    # given a run held by a process beating with a 30 s TTL
    run_id = new_id()
    from tests.store._support import create

    create(store, run_id)
    proc = f"proc-{new_id()}"
    store.beat(proc, ttl_ms=30_000, holding=[])
    acquire(store, run_id, f"tok@{proc}", now=NOW, lease_ms=LEASE_MS)
    # while it beats, another worker finds the run busy
    aging_clock.advance(29)
    assert acquire(store, run_id, holder(store, "b"), now=NOW + 1, lease_ms=LEASE_MS)[0] == "busy"
    # when it has not beaten for longer than the TTL, the run is taken over
    aging_clock.advance(2)
    status, record = acquire(store, run_id, holder(store, "c"), now=NOW + 2, lease_ms=LEASE_MS)
    assert status == "ok" and record is not None and record.crashes == 1


def test_skipped_starts_are_forgotten_with_the_routed_runs(store, aging_clock):
    # given an event routed with a skipped start, kept for a day
    event_id = new_id("evt")
    store.complete_routing(event_id, [], ttl_ms=DAY, skipped=(Skip("f", "rate_limited"),))
    # when a day and a second have passed, then both are gone
    aging_clock.advance(DAY / 1000 + 1)
    assert store.routed_runs(event_id) is None
    assert store.skipped_starts(event_id) == []


def test_a_run_task_tasks_end_outlives_later_starts_and_both_expire(store, aging_clock):
    # given a run_task task started by one process, then by another (a redelivery)
    task_id = new_id("task")
    assert store.task_outcome(task_id) is None
    store.note_task(task_id, {"status": "started", "proc": "p1"}, ttl_ms=DAY)
    store.note_task(task_id, {"status": "started", "proc": "p2"}, ttl_ms=DAY)
    assert store.task_outcome(task_id) == {"status": "started", "proc": "p2"}
    # when it ends, and a late duplicate delivery starts it again
    store.note_task(task_id, {"status": "completed", "result": {"n": 1}}, ttl_ms=DAY)
    store.note_task(task_id, {"status": "started", "proc": "p3"}, ttl_ms=DAY)
    # then its end is what is known of it, until the TTL forgets both
    assert store.task_outcome(task_id) == {"status": "completed", "result": {"n": 1}}
    aging_clock.advance(DAY / 1000 + 1)
    assert store.task_outcome(task_id) is None


def test_a_process_is_alive_while_its_key_is(store, aging_clock):
    proc = f"proc-{new_id()}"
    assert store.proc_alive(proc) is False
    store.beat(proc, ttl_ms=30_000, holding=[])
    assert store.proc_alive(proc) is True
    aging_clock.advance(31)
    assert store.proc_alive(proc) is False
