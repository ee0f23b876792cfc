"""Routing matches waits and cancel_on conditions from the waiters alone, without loading runs.

Each test runs on the memory store, on a real redis-server (a server of its own) and on a
3-master Redis Cluster, with the app executing in process (eager).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from celery import Celery
from redis.connection import AbstractConnection

from celery_steps import CancelOn, CelerySteps, Context, Debounce
from celery_steps.clock import FakeClock
from celery_steps.engine import steps as engine_steps
from celery_steps.runtime import runs as runtime_runs
from celery_steps.store.base import Waiter
from celery_steps.testing import eager_steps
from tests.conftest import RedisServer
from tests.servers import RedisCluster


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    """A redis-server for this module alone: nothing else runs commands on it."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("cluster", marks=pytest.mark.redis)])
def steps(request: pytest.FixtureRequest) -> CelerySteps:
    if request.param == "memory":
        return eager_steps(FakeClock(start_ms=1_790_000_000_000))
    server: RedisServer | RedisCluster = request.getfixturevalue(
        "own_redis" if request.param == "redis" else "redis_cluster")
    app = Celery(f"waitmatch-{uuid.uuid4().hex[:6]}", set_as_current=False)
    app.conf.update(task_always_eager=True, steps_store_url=server.url(),
                    steps_namespace=f"t{uuid.uuid4().hex[:10]}", steps_timer_poller=False)
    return CelerySteps(app)


class LoadRuns:
    """Counts the store's ``load_run`` calls."""

    def __init__(self, steps: CelerySteps, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        store = steps.runtime.store
        original = store.load_run

        def counting(run_id: str) -> Any:
            self.calls.append(run_id)
            return original(run_id)

        monkeypatch.setattr(store, "load_run", counting)


@pytest.fixture
def load_runs(steps: CelerySteps, monkeypatch: pytest.MonkeyPatch) -> LoadRuns:
    return LoadRuns(steps, monkeypatch)


def declare_waits(steps: CelerySteps) -> None:
    """A function whose run waits for ``t/answer`` with the if_exp (and match) its trigger
    event carries."""

    @steps.function(id="waits", trigger="t/start")
    def waits(ctx: Context) -> Any:
        got = ctx.step.wait_for_event("w", event="t/answer", timeout="1d",
                                      if_exp=ctx.event.data["if_exp"],
                                      match=ctx.event.data.get("match"))
        return None if got is None else got.data


def start(steps: CelerySteps, **data: Any) -> str:
    [event_id] = steps.send("t/start", data=data)
    [run] = steps.runs_for_event(event_id)
    assert steps.get_run(run.id).status == "waiting"
    return run.id


def statuses(steps: CelerySteps, run_ids: list[str]) -> list[str]:
    return [steps.get_run(run_id).status for run_id in run_ids]


class RoundTrips:
    """Counts the Redis round trips (a command, a pipeline, a script) made by this thread:
    the store's background threads (the process heartbeat) are left out."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        thread = threading.get_ident()
        original = AbstractConnection.send_packed_command

        def counting(connection: Any, command: Any, check_health: bool = True) -> None:
            if threading.get_ident() == thread:
                self.count += 1
            original(connection, command, check_health)

        monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)


EQUALITY = "async.data.order == event.data.order"
COMPARISON = "async.data.amount >= event.data.minimum"


# -- nothing loaded for what does not match ------------------------------------------------
@pytest.mark.parametrize(("if_exp", "answer"), [(EQUALITY, {"order": 999}),
                                                (COMPARISON, {"amount": 5})],
                         ids=["equality", "comparison"])
def test_an_event_no_waiting_condition_accepts_loads_no_run(
    steps: CelerySteps, load_runs: LoadRuns, if_exp: str, answer: dict[str, Any],
) -> None:
    # given 20 runs waiting with an if_exp (no match), none of which the answer satisfies
    declare_waits(steps)
    runs = [start(steps, if_exp=if_exp, order=n, minimum=10 + n) for n in range(20)]
    load_runs.calls.clear()

    # when the event is routed
    steps.send("t/answer", data=answer)

    # then no run was loaded, and every run still waits
    assert load_runs.calls == []
    assert set(statuses(steps, runs)) == {"waiting"}


@pytest.mark.redis
@pytest.mark.parametrize(("if_exp", "answer"), [(EQUALITY, {"order": 999}),
                                                (COMPARISON, {"amount": 5})],
                         ids=["equality", "comparison"])
def test_an_event_costs_the_same_redis_round_trips_with_one_or_forty_waiting_runs(
    own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch, if_exp: str,
    answer: dict[str, Any],
) -> None:
    round_trips = RoundTrips(monkeypatch)

    def cost(waiting: int) -> int:
        app = Celery(f"waitmatch-{uuid.uuid4().hex[:6]}", set_as_current=False)
        app.conf.update(task_always_eager=True, steps_store_url=own_redis.url(),
                        steps_namespace=f"t{uuid.uuid4().hex[:10]}", steps_timer_poller=False)
        steps = CelerySteps(app)
        declare_waits(steps)
        for n in range(waiting):
            start(steps, if_exp=if_exp, order=n, minimum=10 + n)
        before = round_trips.count
        steps.send("t/answer", data=answer)  # stored and routed, in process
        return round_trips.count - before

    # given one waiting run, then forty, whose if_exp the event does not satisfy
    # then storing and routing the event takes as many Redis round trips either way
    one, forty = cost(1), cost(40)
    assert forty == one
    assert one < 10


# -- matching still works ----------------------------------------------------------------------
def test_an_if_exp_equality_resumes_only_the_run_it_names(steps: CelerySteps) -> None:
    declare_waits(steps)
    runs = [start(steps, if_exp=EQUALITY, order=n) for n in range(3)]

    steps.send("t/answer", data={"order": 1, "note": "for run 1"})

    assert statuses(steps, runs) == ["waiting", "completed", "waiting"]
    assert steps.get_run(runs[1]).output == {"order": 1, "note": "for run 1"}


def test_an_if_exp_comparison_is_evaluated_against_each_runs_own_trigger(
    steps: CelerySteps, load_runs: LoadRuns,
) -> None:
    declare_waits(steps)
    low, high = (start(steps, if_exp=COMPARISON, minimum=m) for m in (10, 20))

    steps.send("t/answer", data={"amount": 15})

    assert statuses(steps, [low, high]) == ["completed", "waiting"]


def test_with_match_and_if_exp_an_event_must_pass_both(steps: CelerySteps) -> None:
    declare_waits(steps)
    run = start(steps, if_exp=COMPARISON, match="data.cart", cart="c-1", minimum=10)

    steps.send("t/answer", data={"cart": "c-1", "amount": 5})   # the match only
    steps.send("t/answer", data={"cart": "c-2", "amount": 50})  # the if_exp only
    assert steps.get_run(run).status == "waiting"

    steps.send("t/answer", data={"cart": "c-1", "amount": 50})
    assert steps.get_run(run).output == {"cart": "c-1", "amount": 50}


def test_numbers_and_strings_compare_as_cel_does(steps: CelerySteps) -> None:
    declare_waits(steps)
    integer = start(steps, if_exp=EQUALITY, order=7)
    text = start(steps, if_exp=EQUALITY, order="8")
    huge = start(steps, if_exp=EQUALITY, order=2**53 + 1)

    steps.send("t/answer", data={"order": 7.0})      # 7 == 7.0 in CEL
    steps.send("t/answer", data={"order": 8})        # "8" != 8
    steps.send("t/answer", data={"order": 2.0**53})  # CEL compares these as doubles: equal

    assert statuses(steps, [integer, text, huge]) == ["completed", "waiting", "completed"]


def test_an_event_or_a_trigger_missing_the_compared_field_resumes_nothing(
    steps: CelerySteps, load_runs: LoadRuns,
) -> None:
    declare_waits(steps)
    without = start(steps, if_exp=EQUALITY)  # its trigger has no data.order
    with_order = start(steps, if_exp=EQUALITY, order=3)
    load_runs.calls.clear()

    steps.send("t/answer", data={"other": 3})      # no data.order
    steps.send("t/answer", data={"order": None})   # the trigger's is missing, not null

    assert load_runs.calls == []
    assert statuses(steps, [without, with_order]) == ["waiting", "waiting"]


def test_a_condition_testing_for_a_field_the_trigger_lacks_sees_it_missing(
    steps: CelerySteps,
) -> None:
    declare_waits(steps)
    coupon = "!has(event.data.coupon) || async.data.coupon == event.data.coupon"
    any_coupon = start(steps, if_exp=coupon)
    coupon_a = start(steps, if_exp=coupon, coupon="A")

    steps.send("t/answer", data={"coupon": "B"})

    assert statuses(steps, [any_coupon, coupon_a]) == ["completed", "waiting"]


# -- cancel_on -------------------------------------------------------------------------------
def test_cancel_on_with_if_exp_cancels_the_runs_it_accepts_and_loads_no_other(
    steps: CelerySteps, load_runs: LoadRuns,
) -> None:
    # given runs cancelled by a stop event for their user, or by a higher level
    @steps.function(id="cancellable", trigger="t/job", cancel_on=[
        CancelOn("t/stop", if_exp="async.data.user == event.data.user"),
        CancelOn("t/escalate", if_exp="async.data.level > event.data.level"),
    ])
    def cancellable(ctx: Context) -> None:
        ctx.step.sleep("nap", "1d")

    runs = [steps.runs_for_event(steps.send("t/job", data={"user": u, "level": u})[0])[0].id
            for u in (1, 2)]
    load_runs.calls.clear()

    # when events that match no run are routed, nothing is loaded or cancelled
    steps.send("t/stop", data={"user": 3})
    steps.send("t/escalate", data={"level": 1})
    assert load_runs.calls == []
    assert statuses(steps, runs) == ["sleeping", "sleeping"]

    # when events that match are routed, exactly those runs are cancelled
    steps.send("t/stop", data={"user": 1})
    assert statuses(steps, runs) == ["cancelled", "sleeping"]
    steps.send("t/escalate", data={"level": 5})
    assert statuses(steps, runs) == ["cancelled", "cancelled"]
    assert "t/escalate" in (steps.get_run(runs[1]).error or {}).get("message", "")


def test_cancel_on_of_an_ended_run_leaves_it_as_it_ended(steps: CelerySteps) -> None:
    @steps.function(id="quick", trigger="t/quick",
                    cancel_on=[CancelOn("t/stop", if_exp="async.data.user == event.data.user")])
    def quick(ctx: Context) -> str:
        return "done"

    [run] = steps.runs_for_event(steps.send("t/quick", data={"user": 1})[0])

    steps.send("t/stop", data={"user": 1})

    assert steps.get_run(run.id).status == "completed"


def test_a_debounced_runs_cancel_on_sees_its_latest_event(steps: CelerySteps) -> None:
    # given a debounced run that collected two events, the second with user 2
    @steps.function(id="debounced", trigger="t/edit", debounce=Debounce("1m"),
                    cancel_on=[CancelOn("t/stop", if_exp="async.data.user == event.data.user")])
    def debounced(ctx: Context) -> None:
        return None

    [first] = steps.send("t/edit", data={"user": 1})
    steps.send("t/edit", data={"user": 2})
    [run] = steps.runs_for_event(first)
    assert steps.get_run(run.id).status == "queued"

    # then its trigger is the latest event: a stop for user 1 leaves it, user 2 cancels it
    steps.send("t/stop", data={"user": 1})
    assert steps.get_run(run.id).status == "queued"
    steps.send("t/stop", data={"user": 2})
    assert steps.get_run(run.id).status == "cancelled"


# -- waiters stored by an older version --------------------------------------------------
def as_older_version(waiter: Waiter) -> Waiter:
    """A waiter as versions before kept it: no trigger parts, indexed only by ``match``."""
    if waiter.condition is None:
        return waiter
    return replace(waiter, trigger=None, match_path=None, match_key=None)


def test_waiters_of_an_older_version_still_match_by_loading_their_runs(
    steps: CelerySteps, load_runs: LoadRuns, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given waits and a cancel_on registered the way an older version did
    for module in (engine_steps, runtime_runs):
        original = module.build_waiter
        monkeypatch.setattr(module, "build_waiter",
                            lambda *a, _o=original, **k: as_older_version(_o(*a, **k)))
    declare_waits(steps)

    @steps.function(id="cancellable", trigger="t/job",
                    cancel_on=[CancelOn("t/stop", if_exp="async.data.user == event.data.user")])
    def cancellable(ctx: Context) -> None:
        ctx.step.sleep("nap", "1d")

    waiting = [start(steps, if_exp=EQUALITY, order=n) for n in range(2)]
    [job] = steps.runs_for_event(steps.send("t/job", data={"user": 1})[0])
    load_runs.calls.clear()

    # when events that match nothing are routed, each such waiter's run is loaded (as before)
    steps.send("t/answer", data={"order": 999})
    steps.send("t/stop", data={"user": 9})
    assert sorted(load_runs.calls) == sorted([*waiting, job.id])
    assert statuses(steps, [*waiting, job.id]) == ["waiting", "waiting", "sleeping"]

    # and events that match resume and cancel as before
    steps.send("t/answer", data={"order": 1})
    steps.send("t/stop", data={"user": 1})
    assert statuses(steps, [*waiting, job.id]) == ["waiting", "completed", "cancelled"]
