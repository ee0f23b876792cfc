"""Flow control at run start: rate limits, throttles and singletons (memory store)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from celery_steps import (
    BatchEvents,
    CelerySteps,
    Concurrency,
    ConfigurationError,
    Context,
    Debounce,
    RateLimit,
    Singleton,
    Throttle,
)
from celery_steps.clock import FakeClock
from celery_steps.runtime.timers import poll_once


def started(steps: CelerySteps, function_id: str) -> int:
    return len(steps.list_runs(function_id=function_id))


def test_a_rate_limit_skips_starts_beyond_the_limit_per_period_and_key(
    steps: CelerySteps, clock: FakeClock
) -> None:
    @steps.function(id="limited", trigger="t/rate",
                    rate_limit=RateLimit(2, "1h", key="event.data.user"))
    def limited(ctx: Context) -> None:
        return None

    for _ in range(3):
        steps.send("t/rate", data={"user": "ann"})
    steps.send("t/rate", data={"user": "bob"})
    assert started(steps, "limited") == 3  # two for ann, one for bob

    clock.advance(timedelta(hours=1, seconds=1))
    steps.send("t/rate", data={"user": "ann"})
    assert started(steps, "limited") == 4


def test_a_throttle_queues_starts_beyond_the_rate_and_starts_them_later(
    steps: CelerySteps, clock: FakeClock
) -> None:
    @steps.function(id="throttled", trigger="t/throttle", throttle=Throttle(1, "10s"))
    def throttled(ctx: Context) -> int:
        return int(ctx.event.data["n"])

    runs = [steps.runs_for_event(steps.send("t/throttle", data={"n": n})[0])[0].id
            for n in range(3)]
    assert [steps.get_run(r).status for r in runs] == ["completed", "queued", "queued"]

    clock.advance(10)
    poll_once(steps.runtime)
    assert [steps.get_run(r).status for r in runs] == ["completed", "completed", "queued"]

    clock.advance(10)
    poll_once(steps.runtime)
    assert [steps.get_run(r).output for r in runs] == [0, 1, 2]


def test_a_singleton_in_skip_mode_drops_new_runs_while_one_is_active(
    steps: CelerySteps, clock: FakeClock
) -> None:
    @steps.function(id="single", trigger="t/single", singleton=Singleton(key="event.data.acct"))
    def single(ctx: Context) -> None:
        ctx.step.sleep("work", "1m")

    first = steps.runs_for_event(steps.send("t/single", data={"acct": 1})[0])
    skipped = steps.runs_for_event(steps.send("t/single", data={"acct": 1})[0])
    other = steps.runs_for_event(steps.send("t/single", data={"acct": 2})[0])
    assert (len(first), len(skipped), len(other)) == (1, 0, 1)

    clock.advance(61)
    poll_once(steps.runtime)
    assert steps.get_run(first[0].id).status == "completed"
    assert len(steps.runs_for_event(steps.send("t/single", data={"acct": 1})[0])) == 1


def test_a_singleton_in_cancel_mode_replaces_the_active_run(steps: CelerySteps) -> None:
    @steps.function(id="latest", trigger="t/latest", singleton=Singleton(mode="cancel"))
    def latest(ctx: Context) -> None:
        ctx.step.sleep("work", "1h")

    old = steps.runs_for_event(steps.send("t/latest")[0])[0].id
    new = steps.runs_for_event(steps.send("t/latest")[0])[0].id

    assert steps.get_run(old).status == "cancelled"
    assert steps.get_run(new).status == "sleeping"


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"concurrency": Concurrency(0)}, "concurrency.limit must be a positive integer"),
        ({"rate_limit": RateLimit(1, "soon")}, "period"),
        ({"throttle": Throttle(2, "1m", key="event.(")}, "key"),
        ({"singleton": Singleton(mode="queue")}, "mode"),  # type: ignore[arg-type]
    ],
)
def test_bad_flow_control_options_are_rejected_at_declaration(
    steps: CelerySteps, kwargs: dict, problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        steps.function(id="bad-flow", trigger="t/x", **kwargs)(lambda ctx: None)


def test_debounce_starts_one_run_after_the_burst_with_the_last_event(
    steps: CelerySteps, clock: FakeClock
) -> None:
    @steps.function(id="debounced", trigger="t/typing",
                    debounce=Debounce("5s", key="event.data.doc"))
    def debounced(ctx: Context) -> int:
        return int(ctx.event.data["rev"])

    ids = []
    for rev in range(3):
        ids.append(steps.send("t/typing", data={"doc": 1, "rev": rev})[0])
        clock.advance(2)  # each event within 5 s of the previous one
    other = steps.send("t/typing", data={"doc": 2, "rev": 9})[0]
    run_ids = {r.id for e in ids for r in steps.runs_for_event(e)}
    assert len(run_ids) == 1
    assert steps.get_run(run_ids.pop()).status == "queued"

    clock.advance(5)
    poll_once(steps.runtime)

    runs = {r.output for r in steps.list_runs(function_id="debounced")}
    assert runs == {2, 9}  # doc 1 ran once with its last revision; doc 2 on its own
    assert steps.runs_for_event(other)[0].output == 9


def test_debounce_timeout_bounds_the_wait_after_the_first_event(
    steps: CelerySteps, clock: FakeClock
) -> None:
    @steps.function(id="bounded-debounce", trigger="t/chatty",
                    debounce=Debounce("5s", timeout="8s"))
    def bounded(ctx: Context) -> int:
        return int(ctx.event.data["n"])

    for n in range(6):  # a steady stream, never 5 s apart
        steps.send("t/chatty", data={"n": n})
        clock.advance(2)
        poll_once(steps.runtime)

    # the first run started 8 s after the first event (t=8), with the latest event then (n=3);
    # the events after it (n=4, 5) collect in a new run
    [run] = steps.list_runs(function_id="bounded-debounce", status="completed")
    assert run.output == 3
    assert run.ended_at is not None
    assert (run.ended_at - run.created_at).total_seconds() == 8
    assert [r.status for r in steps.list_runs(function_id="bounded-debounce")] == [
        "queued", "completed"]


def test_batch_events_runs_once_per_full_batch_with_every_event(
    steps: CelerySteps, clock: FakeClock
) -> None:
    @steps.function(id="batched", trigger="t/item", batch_events=BatchEvents(3, "1m"))
    def batched(ctx: Context) -> list[int]:
        return [int(e.data["n"]) for e in ctx.events]

    for n in range(5):
        steps.send("t/item", data={"n": n})
    full = steps.list_runs(function_id="batched", status="completed")
    assert [r.output for r in full] == [[0, 1, 2]]

    clock.advance(60)
    poll_once(steps.runtime)  # the partial batch starts at its timeout
    outputs = sorted(r.output for r in steps.list_runs(function_id="batched"))
    assert outputs == [[0, 1, 2], [3, 4]]
