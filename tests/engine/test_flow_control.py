"""Flow control at run start: rate limits, throttles and singletons (memory store)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from celery_steps import (
    CelerySteps,
    Concurrency,
    ConfigurationError,
    Context,
    RateLimit,
    Singleton,
    Throttle,
)
from celery_steps.clock import FakeClock
from celery_steps.integration.poller import poll_once


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
    poll_once(steps)
    assert [steps.get_run(r).status for r in runs] == ["completed", "completed", "queued"]

    clock.advance(10)
    poll_once(steps)
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
    poll_once(steps)
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
        ({"concurrency": Concurrency(0)}, "positive integer limit"),
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
