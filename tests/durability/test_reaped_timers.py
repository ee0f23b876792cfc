"""A dead process's runs are woken when it is reaped; one that ended meanwhile must not be
woken for ever. Found by the chaos suite (tests/chaos): a pool process killed just after its
run ended (its process key still listed the run's timer) left that ended run with a timer
that fired every 30 s, for good."""

from __future__ import annotations

from typing import Any

from celery_steps.store.base import Outcome
from tests.store._support import (
    NOW,
    RETENTION_MS,
    acquire,
    assert_not_scheduled,
    leased,
    run_member,
)


def test_an_ended_run_woken_by_the_reaping_of_its_dead_holder_keeps_no_timer(
    store: Any,
) -> None:
    # given a run that ended, its outbox done, held by a process whose key still lists the
    # run's timer (the process died before its next beat)
    run_id, token = leased(store)
    proc = token.partition("@")[2]
    store.beat(proc, ttl_ms=3_600_000, holding=[run_member(run_id)])
    assert store.finish(run_id, token, Outcome("completed", NOW + 50, '"done"', None),
                        retention_ms=RETENTION_MS) is True
    store.notified(run_id)

    # when the dead process is reaped (waking the runs it held), and the woken run's task
    # finds it ended
    store.reap(proc)
    assert acquire(store, run_id, "tok-2@alive", now=NOW + 100)[0] == "ended"

    # then no timer is left to wake it again
    assert_not_scheduled(store, run_member(run_id))
