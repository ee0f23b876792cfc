"""A task resuming several due runs (or routing several events): each run on its own, as if it
had its own task; and a resumed wait goes through the timers when the pollers publish."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from celery import Celery

import celery_steps.runtime.runtime as runtime_mod
from celery_steps import CelerySteps, Context, NonRetriableError
from celery_steps.clock import FakeClock
from celery_steps.errors import ConfigurationError, RunFailedError
from celery_steps.runtime.timers import poll_once
from celery_steps.settings import Settings


def sleepers(steps: CelerySteps, count: int, *, failing: int | None = None) -> list[str]:
    """``count`` runs asleep for a minute; the one numbered ``failing`` fails when it wakes."""

    @steps.function(id="napper", trigger="t/nap", retries=0)
    def napper(ctx: Context) -> int:
        ctx.step.sleep("nap", "1m")

        def work() -> int:
            if ctx.event.data["n"] == failing:
                raise NonRetriableError("this one fails")
            return int(ctx.event.data["n"])

        return ctx.step.run("work", work)

    run_ids = []
    for n in range(count):
        [event_id] = steps.send("t/nap", data={"n": n})
        run_ids.extend(r.id for r in steps.runs_for_event(event_id))
    assert [steps.get_run(r).status for r in run_ids] == ["sleeping"] * count
    return run_ids


def test_one_run_failing_for_good_does_not_stop_the_others_in_its_batch(
    steps: CelerySteps, clock: FakeClock
) -> None:
    run_ids = sleepers(steps, 3, failing=0)
    clock.advance(timedelta(minutes=1))

    # when one task resumes all three, the first of which fails for good
    with pytest.raises(RunFailedError) as failed:
        steps.runtime.execute_many("napper", run_ids)

    # then the others completed, and the task fails with the run that failed
    assert failed.value.run_id == run_ids[0]
    assert [steps.get_run(r).status for r in run_ids] == ["failed", "completed", "completed"]


def test_an_error_executing_one_run_leaves_it_to_its_timer_and_the_others_run(
    steps: CelerySteps, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_ids = sleepers(steps, 2)
    clock.advance(timedelta(minutes=1))
    execute = steps.runtime.execute

    def flaky(function_id: str, run_id: str, **kwargs: Any) -> str:
        if run_id == run_ids[0]:
            raise ConnectionError("the store went away")
        return execute(function_id, run_id, **kwargs)

    monkeypatch.setattr(steps.runtime, "execute", flaky)

    outcomes = steps.runtime.execute_many("napper", run_ids)

    assert outcomes == ["error", "completed"]
    assert [steps.get_run(r).status for r in run_ids] == ["sleeping", "completed"]


def test_runs_not_begun_within_the_budget_are_handed_back_to_their_timers(
    steps: CelerySteps, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_ids = sleepers(steps, 3)
    clock.advance(timedelta(minutes=2))
    monkeypatch.setattr(runtime_mod, "BATCH_BUDGET_S", 0.0)

    outcomes = steps.runtime.execute_many("napper", run_ids)

    # the first ran; the others' timers are due now, for any poller to send again
    assert outcomes == ["completed"]
    assert [steps.get_run(r).status for r in run_ids] == ["completed", "sleeping", "sleeping"]
    assert steps.runtime.store.next_due() == clock.now_ms()
    monkeypatch.setattr(runtime_mod, "BATCH_BUDGET_S", 60.0)
    poll_once(steps.runtime)
    assert [steps.get_run(r).status for r in run_ids] == ["completed"] * 3


def test_a_batch_of_routings_routes_every_event(steps: CelerySteps) -> None:
    started: list[int] = []

    @steps.function(id="counter", trigger="t/count")
    def counter(ctx: Context) -> None:
        started.append(int(ctx.event.data["n"]))

    runtime = steps.runtime
    events = [runtime.store.put_event(f"ev{n}", f'{{"name":"t/count","id":"ev{n}",'
                                      f'"data":{{"n":{n}}},"ts":1}}', route_at=10**15,
                                      ttl_ms=60_000) for n in range(3)]
    assert events == [True] * 3

    runtime.route_many(["ev0", "ev1", "ev2"])

    assert sorted(started) == [0, 1, 2]
    assert all(runtime.store.routed_runs(f"ev{n}") for n in range(3))


@pytest.fixture
def pollers_publish(clock: FakeClock) -> CelerySteps:
    """Not eager, memory store: the timer pollers publish (the default)."""
    app = Celery("pollers_publish", set_as_current=False)
    app.conf.update(steps_store_url="memory://", steps_timer_poller=False)
    return CelerySteps(app, clock=clock)


def test_a_resumed_wait_is_sent_by_the_timer_pollers_not_by_the_router(
    pollers_publish: CelerySteps, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = pollers_publish

    @steps.function(id="waiter", trigger="t/wait")
    def waiter(ctx: Context) -> bool:
        return ctx.step.wait_for_event("go", event="t/go", timeout="1h") is not None

    runtime = steps.runtime
    [event_id] = steps.send("t/wait")
    [run_id] = runtime.route(event_id)
    runtime.execute("waiter", run_id)
    assert steps.get_run(run_id).status == "waiting"
    published: list[tuple[str, ...]] = []
    monkeypatch.setattr(runtime.transport, "enqueue_run",
                        lambda *args, **kwargs: published.append(args))

    # when the awaited event is routed
    [go] = steps.send("t/go")
    runtime.route(go)

    # then nothing is published from the routing: the run's timer is due now
    assert published == []
    assert runtime.store.next_due() == clock.now_ms()
    assert runtime.store.claim_due(now=clock.now_ms(), limit=10, redo_ms=1) == [
        (f"r|waiter|{run_id}", clock.now_ms() + 1)]


@pytest.mark.parametrize("value", [0, -3, 2.5, "20", True])
def test_a_wake_batch_that_is_not_a_positive_whole_number_is_refused(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="steps_wake_batch"):
        Settings.from_conf({"steps_wake_batch": value})


def test_wake_local_must_be_a_boolean() -> None:
    with pytest.raises(ConfigurationError, match="steps_wake_local"):
        Settings.from_conf({"steps_wake_local": "yes"})
