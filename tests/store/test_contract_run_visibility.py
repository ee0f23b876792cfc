"""Contract: the step a holder executes now (written by its heartbeat's renew, cleared by the
step's checkpoint and by letting go of the run), and the run's trace context."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from celery_steps.store.base import Outcome, StateStore, Suspension
from tests.store._support import LEASE_MS, NOW, RETENTION_MS, create, leased

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_renew_records_the_step_running_now_and_an_empty_renew_clears_it(store) -> None:
    run_id, token = leased(store)

    assert store.renew(run_id, token, now=NOW + 1, lease_ms=LEASE_MS, running=("fetch", NOW))
    record = store.load_run(run_id)
    assert record is not None and record.running_step == ("fetch", NOW)

    assert store.renew(run_id, token, now=NOW + 2, lease_ms=LEASE_MS)
    record = store.load_run(run_id)
    assert record is not None and record.running_step is None


def test_a_renew_by_another_holder_records_nothing(store) -> None:
    run_id, _ = leased(store)

    assert not store.renew(run_id, "intruder", now=NOW + 1, lease_ms=LEASE_MS,
                           running=("fetch", NOW))

    record = store.load_run(run_id)
    assert record is not None and record.running_step is None


LETTING_GO: dict[str, Callable[[StateStore, str, str], Any]] = {
    "save_step": lambda s, r, t: s.save_step(r, t, "fetch", {"op": "run", "pos": 0,
                                                               "status": "completed"}),
    "suspend": lambda s, r, t: s.suspend(r, t, Suspension("sleeping", NOW + 60_000)),
    "finish": lambda s, r, t: s.finish(r, t, Outcome("completed", NOW + 5, "1", None),
                                       retention_ms=RETENTION_MS),
    "release": lambda s, r, t: s.release(r, t),
}


@pytest.mark.parametrize("write", sorted(LETTING_GO))
def test_the_checkpoint_and_letting_go_clear_the_running_step(store, write: str) -> None:
    # given a run whose heartbeat recorded a running step
    run_id, token = leased(store)
    store.renew(run_id, token, now=NOW + 1, lease_ms=LEASE_MS, running=("fetch", NOW))

    # when the step checkpoints, or the holder suspends, ends or lets go of the run
    LETTING_GO[write](store, run_id, token)

    # then no step is recorded as running
    record = store.load_run(run_id)
    assert record is not None and record.running_step is None


def test_a_run_keeps_the_trace_context_it_was_created_with(store) -> None:
    traced = create(store, trace=TRACEPARENT)
    plain = create(store)

    first, second = store.load_run(traced), store.load_run(plain)

    assert first is not None and first.trace == TRACEPARENT
    assert second is not None and second.trace is None
