"""What the timer poller sends for what one claim brought: batched wake-ups, the worker's own
pool first, the broker for the rest (``runtime/timers.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from celery_steps.clock import FakeClock
from celery_steps.runtime.timers import (
    BUSY_FALLBACK_MS,
    REDO_MS,
    dispatch_claimed,
    poll_once,
    split,
)
from celery_steps.settings import Settings
from celery_steps.store.memory import MemoryStore


class Recorder:
    """A publisher (or, with ``room``, a local pool) that records what it was given."""

    def __init__(self, room: int = 0, serves: tuple[str, ...] = ("fn",), routes: bool = True,
                 refuse: bool = False) -> None:
        self.sent: list[tuple[str, tuple[str, ...]]] = []
        self._room, self._serves, self._routes, self._refuse = room, serves, routes, refuse

    def enqueue_run(self, function_id: str, run_id: str, *more: str,
                    priority: int | None = None) -> None:
        self._take(f"run:{function_id}", (run_id, *more))

    def publish_route(self, event_id: str, *more: str) -> None:
        self._take("route", (event_id, *more))

    def send_branch(self, function_id: str, run_id: str, step_key: str) -> None:
        self._take("branch", (function_id, run_id, step_key))

    def _take(self, what: str, ids: tuple[str, ...]) -> None:
        if self._refuse:
            raise RuntimeError("the consumer is not running")
        self.sent.append((what, ids))

    # the LocalPool side
    def room(self) -> int:
        return self._room

    def takes_run(self, function_id: str) -> bool:
        return function_id in self._serves

    def takes_routes(self) -> bool:
        return self._routes


def life(wake_batch: int = 20, store: Any = None, clock: Any = None) -> Any:
    """What dispatch and poll_once use of the runtime."""
    broker = Recorder()

    @contextmanager
    def batch() -> Iterator[Recorder]:
        yield broker

    return SimpleNamespace(settings=Settings(wake_batch=wake_batch, timer_batch=500),
                           transport=SimpleNamespace(batch=batch), broker=broker,
                           store=store, clock=clock)


def runs(n: int, fn: str = "fn") -> list[tuple[str, int]]:
    return [(f"r|{fn}|run{i}", 1000) for i in range(n)]


def ids_of(sent: list[tuple[str, tuple[str, ...]]]) -> list[str]:
    return [i for _, ids in sent for i in ids]


def test_split_keeps_the_order_caps_the_size_and_balances_the_chunks() -> None:
    items = [str(i) for i in range(45)]

    chunks = split(items, 20)

    assert [len(c) for c in chunks] == [15, 15, 15]
    assert [i for c in chunks for i in c] == items
    assert split(items[:3], 20, spread=2) == [["0", "1"], ["2"]]
    assert split(items[:1], 20, spread=4) == [["0"]]
    assert split([], 20) == []


def test_due_runs_of_one_function_go_in_tasks_of_at_most_the_wake_batch() -> None:
    lc = life(wake_batch=20)

    done = dispatch_claimed(lc, runs(45))

    assert [(what, len(ids)) for what, ids in lc.broker.sent] == [("run:fn", 15)] * 3
    assert ids_of(lc.broker.sent) == [f"run{i}" for i in range(45)]
    assert done == []  # a run's timer stays claimed: the run's own progress moves it


def test_a_wake_batch_of_one_sends_one_task_per_wake_up() -> None:
    lc = life(wake_batch=1)

    dispatch_claimed(lc, [*runs(3), ("e|ev1", 1000), ("e|ev2", 1000)])

    assert lc.broker.sent == [("run:fn", ("run0",)), ("run:fn", ("run1",)),
                              ("run:fn", ("run2",)), ("route", ("ev1",)), ("route", ("ev2",))]


def test_the_worker_gets_what_it_has_room_for_and_the_broker_the_rest() -> None:
    lc = life(wake_batch=20)
    local = Recorder(room=2)

    dispatch_claimed(lc, runs(45), local)

    assert [(what, len(ids)) for what, ids in local.sent] == [("run:fn", 20)] * 2
    assert [(what, len(ids)) for what, ids in lc.broker.sent] == [("run:fn", 5)]
    assert sorted(ids_of(local.sent) + ids_of(lc.broker.sent)) == sorted(
        f"run{i}" for i in range(45))


def test_a_few_due_runs_are_spread_over_the_free_pool_processes() -> None:
    lc = life(wake_batch=20)
    local = Recorder(room=3)

    dispatch_claimed(lc, runs(5), local)

    assert [ids for _, ids in local.sent] == [("run0", "run1"), ("run2", "run3"), ("run4",)]
    assert lc.broker.sent == []


def test_runs_of_a_function_the_worker_does_not_serve_go_through_the_broker() -> None:
    lc = life()
    local = Recorder(room=4, serves=("fn",))

    dispatch_claimed(lc, runs(2, "other") + runs(1, "fn"), local)

    assert local.sent == [("run:fn", ("run0",))]
    assert lc.broker.sent == [("run:other", ("run0", "run1"))]


def test_routings_stay_claimed_until_they_complete_wherever_they_are_sent() -> None:
    routings = [("e|ev1", 1000), ("e|ev2", 1000)]

    here, there = life(), life()
    acked_here = dispatch_claimed(here, routings, Recorder(room=2))
    acked_there = dispatch_claimed(there, routings, Recorder(room=2, routes=False))

    # the routing itself removes its timer; until then a process dying with it (a routing
    # task is acknowledged even then) leaves the timer to fire again
    assert acked_here == []
    assert acked_there == []
    assert there.broker.sent == [("route", ("ev1", "ev2"))]


def test_what_the_worker_refuses_goes_through_the_broker() -> None:
    lc = life()

    dispatch_claimed(lc, runs(2), Recorder(room=2, refuse=True))

    assert ids_of(lc.broker.sent) == ["run0", "run1"]


def test_a_branch_timer_is_published_and_acked_as_before() -> None:
    lc = life()

    done = dispatch_claimed(lc, [("b|fn|run1|step", 1000)], Recorder(room=2))

    assert lc.broker.sent == [("branch", ("fn", "run1", "step"))]
    assert done == [("b|fn|run1|step", 1000)]


@pytest.fixture
def timers() -> Any:
    clock = FakeClock(start_ms=1_790_000_000_000)
    return life(store=MemoryStore(clock=clock), clock=clock)


def test_a_worker_without_room_claims_only_what_waited_too_long_for_it(timers: Any) -> None:
    now = timers.clock.now_ms()
    timers.store.schedule("r|fn|fresh", now - 10)
    timers.store.schedule("r|fn|stale", now - BUSY_FALLBACK_MS - 10)

    claimed = poll_once(timers, Recorder(room=0))

    assert claimed == 1
    assert timers.broker.sent == [("run:fn", ("stale",))]
    assert timers.store.next_due() == now - 10  # the fresh one waits for room
    # the stale one's timer is pushed back as far as any claimed timer's
    assert [m for m, _ in timers.store.claim_due(now=now + REDO_MS - 1, limit=10,
                                                 redo_ms=1)] == ["r|fn|fresh"]


def test_a_worker_claims_no_more_runs_than_it_has_room_for(timers: Any) -> None:
    now = timers.clock.now_ms()
    for i in range(50):
        timers.store.schedule(f"r|fn|run{i}", now - 1)
    local = Recorder(room=2)

    poll_once(timers, local)

    # room 2 x batch 20 per claim; the poller claims again while it has room (a fake's
    # room does not shrink), so everything due was claimed, and given to the worker
    assert len(ids_of(local.sent)) == 50
    assert all(len(ids) <= 20 for _, ids in local.sent)
    assert timers.broker.sent == []
