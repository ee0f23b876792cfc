"""StateStore contract: timers (schedule, claim, ack) and the poller signal. Every store."""

from __future__ import annotations

import threading
import time

from tests.conftest import wait_until
from tests.store._support import NOW, Waiting, blocked_waiters, claimed

REDO = 30_000


def test_next_due_is_none_without_timers(store) -> None:
    assert store.next_due() is None


def test_next_due_is_the_earliest_due_time(store) -> None:
    store.schedule("r|fn|a", NOW + 300)
    store.schedule("r|fn|b", NOW + 100)
    store.schedule("r|fn|c", NOW + 200)
    assert store.next_due() == NOW + 100


def test_schedule_again_replaces_the_due_time(store) -> None:
    store.schedule("r|fn|a", NOW + 100)
    store.schedule("r|fn|a", NOW + 900)
    assert store.next_due() == NOW + 900
    assert "r|fn|a" not in claimed(store, NOW + 899)


def test_unschedule_removes_the_timer(store) -> None:
    store.schedule("r|fn|a", NOW + 100)
    store.schedule("r|fn|b", NOW + 200)
    store.unschedule("r|fn|a")
    assert store.next_due() == NOW + 200
    assert claimed(store, NOW + 10_000) == {"r|fn|b"}


def test_unschedule_of_an_unknown_member_is_harmless(store) -> None:
    store.unschedule("r|fn|nobody")
    assert store.next_due() is None


def test_claim_due_returns_only_due_members_with_their_new_score(store) -> None:
    store.schedule("r|fn|past", NOW - 5)
    store.schedule("r|fn|now", NOW)
    store.schedule("r|fn|later", NOW + 1)
    got = store.claim_due(now=NOW, limit=10, redo_ms=REDO)
    assert sorted(got) == [("r|fn|now", NOW + REDO), ("r|fn|past", NOW + REDO)]


def test_claim_due_respects_the_limit_earliest_first(store) -> None:
    for i, member in enumerate(["r|fn|c", "r|fn|a", "r|fn|b"]):
        store.schedule(member, NOW - 10 + i)  # c earliest, then a, then b
    got = store.claim_due(now=NOW, limit=2, redo_ms=REDO)
    assert [m for m, _ in got] == ["r|fn|c", "r|fn|a"]


def test_claim_due_pushes_claimed_members_back_by_redo(store) -> None:
    store.schedule("r|fn|a", NOW)
    assert [m for m, _ in store.claim_due(now=NOW, limit=10, redo_ms=REDO)] == ["r|fn|a"]
    # a second claim before the redo delay gets nothing
    assert store.claim_due(now=NOW + REDO - 1, limit=10, redo_ms=REDO) == []
    assert store.next_due() == NOW + REDO
    # an unacknowledged claim comes back after the redo delay (at least once)
    got = store.claim_due(now=NOW + REDO, limit=10, redo_ms=REDO)
    assert got == [("r|fn|a", NOW + 2 * REDO)]


def test_claim_due_with_nothing_due_is_empty(store) -> None:
    store.schedule("r|fn|a", NOW + 1)
    assert store.claim_due(now=NOW, limit=10, redo_ms=REDO) == []
    assert store.next_due() == NOW + 1


def test_ack_timers_removes_claimed_members(store) -> None:
    store.schedule("r|fn|a", NOW)
    store.schedule("r|fn|b", NOW)
    got = store.claim_due(now=NOW, limit=10, redo_ms=REDO)
    store.ack_timers(got)
    assert store.next_due() is None


def test_ack_timers_keeps_a_member_rescheduled_meanwhile(store) -> None:
    # given two claimed timers, one of which is re-scheduled before the ack
    store.schedule("r|fn|a", NOW)
    store.schedule("r|fn|b", NOW)
    got = store.claim_due(now=NOW, limit=10, redo_ms=REDO)
    store.schedule("r|fn|a", NOW + 5_000)
    # when the claim is acknowledged
    store.ack_timers(got)
    # then only the untouched one is removed
    assert store.next_due() == NOW + 5_000
    assert claimed(store, NOW + 5_000) == {"r|fn|a"}


def test_ack_timers_with_an_empty_claim_is_harmless(store) -> None:
    store.schedule("r|fn|a", NOW)
    store.ack_timers([])
    assert store.next_due() == NOW


def test_concurrent_claims_get_disjoint_sets_covering_every_due_timer(store) -> None:
    # given 200 due timers
    members = {f"r|fn|run-{i}" for i in range(200)}
    for i, member in enumerate(sorted(members)):
        store.schedule(member, NOW - i)
    barrier = threading.Barrier(2)
    results: list[list[str]] = [[], []]
    errors: list[BaseException] = []

    def claimer(slot: int) -> None:
        try:
            barrier.wait(5)
            for _ in range(1_000):  # bounded: a broken store must not hang the suite
                got = store.claim_due(now=NOW, limit=7, redo_ms=REDO)
                if not got:
                    break
                results[slot].extend(m for m, _ in got)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    # when two pollers claim them at the same time
    threads = [threading.Thread(target=claimer, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    # then every timer is claimed exactly once
    a, b = results
    assert len(a) + len(b) == 200
    assert set(a).isdisjoint(b)
    assert set(a) | set(b) == members


def test_wait_for_signal_without_a_signal_waits_about_the_timeout(store) -> None:
    start = time.monotonic()
    store.wait_for_signal(0.3)
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 2.0


def test_wait_for_signal_returns_early_when_signalled_from_another_thread(store) -> None:
    # given a poller blocked for up to 5 s
    waiting = Waiting(store, 5.0)
    waiting.start()
    try:
        wait_until(lambda: blocked_waiters(store) >= 1, timeout=3, message="poller blocked")
        # when another thread signals
        threading.Thread(target=store.signal).start()
        # then it returns well before its timeout
        wait_until(lambda: not waiting.is_alive(), timeout=3, message="poller woken")
        assert waiting.elapsed is not None and waiting.elapsed < 3.0
    finally:
        waiting.join(6)


def test_wait_for_signal_returns_early_when_an_earlier_timer_is_scheduled(store) -> None:
    store.schedule("r|fn|late", NOW + 3_600_000)
    store.wait_for_signal(0.01)  # consume any pending poke from that schedule
    already = blocked_waiters(store)  # this thread's own subscription, on Redis
    waiting = Waiting(store, 5.0)
    waiting.start()
    try:
        wait_until(lambda: blocked_waiters(store) > already, timeout=3,
                   message="poller blocked")
        store.schedule("r|fn|soon", NOW)
        wait_until(lambda: not waiting.is_alive(), timeout=3, message="poller woken")
        assert waiting.elapsed is not None and waiting.elapsed < 3.0
    finally:
        waiting.join(6)


def test_signal_wakes_at_least_one_of_several_blocked_pollers(store) -> None:
    # given two pollers blocked (one woken poller is enough: it claims every due timer,
    # and pollers not woken wake within their own timeout anyway)
    pollers = [Waiting(store, 4.0), Waiting(store, 4.0)]
    for p in pollers:
        p.start()
    try:
        wait_until(lambda: blocked_waiters(store) >= 2, timeout=3, message="pollers blocked")
        # when one signal is sent
        store.signal()
        # then at least one returns well before its timeout
        wait_until(lambda: not all(p.is_alive() for p in pollers), timeout=2.5,
                   message="a poller woken by one signal")
    finally:
        for p in pollers:
            p.join(5)
