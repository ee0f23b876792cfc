"""Flow-control options together, and why an event started no run (memory store, fake clock).

An event a function matched but started no run for is recorded with the reason:
``steps.get_event(event_id).skipped``.
"""

from __future__ import annotations

import pytest

from celery_steps import (
    BatchEvents,
    CelerySteps,
    Context,
    Debounce,
    Priority,
    RateLimit,
    Singleton,
    SkippedStart,
    Throttle,
)
from celery_steps.clock import FakeClock
from celery_steps.runtime.gates import priority_ms
from celery_steps.runtime.timers import poll_once


def skipped(steps: CelerySteps, event_id: str) -> list[SkippedStart]:
    return steps.get_event(event_id).skipped


def test_a_rate_limit_applies_to_each_event_before_debounce(
    steps: CelerySteps, clock: FakeClock
) -> None:
    # given a debounced function that also admits at most two events an hour
    @steps.function(id="sync", trigger="t/edit", debounce=Debounce("5s"),
                    rate_limit=RateLimit(2, "1h"))
    def sync(ctx: Context) -> int:
        return int(ctx.event.data["rev"])

    # when three edits arrive in one burst
    first, second, third = (steps.send("t/edit", data={"rev": n})[0] for n in range(3))
    clock.advance(5)
    poll_once(steps.runtime)

    # then one run started, with the last admitted event; the third never reached it
    [run] = steps.list_runs(function_id="sync")
    assert run.output == 1
    assert run.id in steps.get_event(first).run_ids
    assert skipped(steps, second) == [SkippedStart(function_id="sync", reason="debounced",
                                                   run_id=run.id)]
    assert skipped(steps, third) == [SkippedStart(function_id="sync", reason="rate_limited")]
    assert steps.get_event(third).run_ids == []


def test_a_throttle_spaces_the_starts_of_debounced_runs(
    steps: CelerySteps, clock: FakeClock
) -> None:
    @steps.function(id="digest", trigger="t/note", throttle=Throttle(1, "1m"),
                    debounce=Debounce("2s", key="event.data.user"))
    def digest(ctx: Context) -> str:
        return str(ctx.event.data["user"])

    steps.send("t/note", data={"user": "ann"})
    steps.send("t/note", data={"user": "bob"})
    clock.advance(2)
    poll_once(steps.runtime)  # both debounce periods end: the throttle lets one start

    assert sorted(r.status for r in steps.list_runs(function_id="digest")) == [
        "completed", "queued"]

    clock.advance(60)
    poll_once(steps.runtime)
    assert [r.status for r in steps.list_runs(function_id="digest")] == ["completed"] * 2


def test_a_throttle_spaces_the_starts_of_batches(steps: CelerySteps, clock: FakeClock) -> None:
    @steps.function(id="bulk", trigger="t/row", batch_events=BatchEvents(2, "1m"),
                    throttle=Throttle(1, "1h"))
    def bulk(ctx: Context) -> list[int]:
        return [int(e.data["n"]) for e in ctx.events]

    ids = [steps.send("t/row", data={"n": n})[0] for n in range(4)]

    assert sorted(r.status for r in steps.list_runs(function_id="bulk")) == ["completed", "queued"]
    assert skipped(steps, ids[1])[0].reason == "batched"
    clock.advance(3600)
    poll_once(steps.runtime)
    assert sorted(r.output for r in steps.list_runs(function_id="bulk")) == [[0, 1], [2, 3]]


def test_a_singleton_skip_names_the_active_run(steps: CelerySteps) -> None:
    @steps.function(id="solo", trigger="t/solo", singleton=Singleton())
    def solo(ctx: Context) -> None:
        ctx.step.sleep("work", "1m")

    [active] = steps.runs_for_event(steps.send("t/solo")[0])
    [second] = steps.send("t/solo")

    assert steps.get_event(second).run_ids == []
    assert skipped(steps, second) == [SkippedStart(function_id="solo", reason="singleton",
                                                   run_id=active.id)]


def test_an_idempotency_duplicate_names_the_run_that_has_the_key(steps: CelerySteps) -> None:
    @steps.function(id="welcome", trigger="user/signed_up", idempotency="event.data.user_id")
    def welcome(ctx: Context) -> None:
        return None

    [first] = steps.send("user/signed_up", data={"user_id": 7})
    [duplicate] = steps.send("user/signed_up", data={"user_id": 7})

    [run] = steps.runs_for_event(first)
    assert steps.runs_for_event(duplicate) == []
    assert skipped(steps, duplicate) == [SkippedStart(function_id="welcome",
                                                      reason="idempotent", run_id=run.id)]
    assert skipped(steps, first) == []


def test_routing_an_event_twice_records_its_run_once_and_no_skip(steps: CelerySteps) -> None:
    @steps.function(id="keyed", trigger="t/keyed", idempotency="event.data.k",
                    rate_limit=RateLimit(1, "1h"))
    def keyed(ctx: Context) -> None:
        return None

    [event_id] = steps.send("t/keyed", data={"k": 1})
    steps.runtime.route(event_id)  # a redelivered routing message

    info = steps.get_event(event_id)
    assert len(info.run_ids) == 1 and info.skipped == []


def test_each_function_an_event_matched_has_its_own_skip(steps: CelerySteps) -> None:
    @steps.function(id="limited", trigger="t/both", rate_limit=RateLimit(1, "1h"))
    def limited(ctx: Context) -> None:
        return None

    @steps.function(id="batched", trigger="t/both", batch_events=BatchEvents(5, "1m"))
    def batched(ctx: Context) -> None:
        return None

    steps.send("t/both")
    [event_id] = steps.send("t/both")

    reasons = {s.function_id: s.reason for s in skipped(steps, event_id)}
    assert reasons == {"limited": "rate_limited", "batched": "batched"}


@pytest.mark.parametrize(("source", "expected"), [
    ("120", 120_000), ("-30", -30_000), ("1.5", 1_500), ("event.data.p", 600_000),
    ("-10000", -600_000), ('"soon"', 0), ("event.data.missing.deeper", 0), ("true", 0),
])
def test_a_runs_priority_is_its_expression_in_seconds_clamped_to_ten_minutes(
    steps: CelerySteps, source: str, expected: int
) -> None:
    @steps.function(id="prio", trigger="t/p", priority=Priority(source))
    def prio(ctx: Context) -> None:
        return None

    assert priority_ms(prio, {"name": "t/p", "data": {"p": 900}}) == expected
