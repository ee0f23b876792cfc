"""Durable sleeps, waits, cancellation and timeouts, with a fake clock (days in milliseconds)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from celery_steps import CancelOn, CelerySteps, Context, Event, Timeouts
from celery_steps.clock import FakeClock
from celery_steps.runtime.timers import poll_once
from celery_steps.testing import settle


def start(steps: CelerySteps, name: str, data: dict[str, Any] | None = None) -> str:
    return steps.runs_for_event(steps.send(name, data=data or {})[0])[0].id


def test_a_seven_day_sleep_holds_no_worker_and_wakes_once(
    steps: CelerySteps, clock: FakeClock
) -> None:
    after: list[int] = []

    @steps.function(id="weekly", trigger="t/sleep")
    def weekly(ctx: Context) -> str:
        ctx.step.sleep("wait-a-week", "7d")
        ctx.step.run("after", lambda: after.append(1))
        return "done"

    run_id = start(steps, "t/sleep")
    assert steps.get_run(run_id).status == "sleeping"

    clock.advance(timedelta(days=7) - timedelta(seconds=1))
    poll_once(steps.runtime)
    assert steps.get_run(run_id).status == "sleeping"

    clock.advance(1)
    poll_once(steps.runtime)
    poll_once(steps.runtime)
    run = steps.get_run(run_id)
    assert run.status == "completed"
    assert after == [1]
    assert [(s.id, s.op, s.status) for s in run.steps] == [
        ("wait-a-week", "sleep", "completed"), ("after", "run", "completed")]


def test_sleep_until_takes_aware_datetimes_and_iso_strings(
    steps: CelerySteps, clock: FakeClock
) -> None:
    target = clock.now() + timedelta(hours=3)

    @steps.function(id="until", trigger="t/until")
    def until(ctx: Context) -> None:
        ctx.step.sleep_until("a", target)
        ctx.step.sleep_until("b", (target + timedelta(hours=1)).isoformat())

    run = settle(steps, start(steps, "t/until"))

    assert run.status == "completed"
    assert clock.now() == target + timedelta(hours=1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda ctx: ctx.step.sleep("s", "5 parsecs"), "duration"),
        (lambda ctx: ctx.step.sleep("s", -3), "duration"),
        (lambda ctx: ctx.step.sleep_until("s", datetime(2030, 1, 1)), "naive"),
        (lambda ctx: ctx.step.wait_for_event("w", event="t/x", timeout=None), "timeout"),
        (lambda ctx: ctx.step.wait_for_event("w", event="t/x", timeout="1h", if_exp="event.("),
         "if_exp"),
    ],
    ids=["unit", "negative", "naive", "no-timeout", "bad-cel"],
)
def test_bad_time_arguments_fail_the_run_at_once_with_a_clear_message(
    steps: CelerySteps, call: Any, message: str
) -> None:
    @steps.function(id="bad-time", trigger="t/bad-time", retries=3)
    def bad_time(ctx: Context) -> None:
        call(ctx)

    run = settle(steps, start(steps, "t/bad-time"))

    assert run.status == "failed"
    assert run.error is not None and message in run.error["message"]


def declare_waiter(steps: CelerySteps) -> None:
    @steps.function(id="approval", trigger="shop/order.created")
    def approval(ctx: Context) -> Any:
        reply = ctx.step.wait_for_event("wait-approval", event="shop/order.approved",
                                        timeout="2d", match="data.order_id",
                                        if_exp="async.data.by != 'bot'")
        return None if reply is None else reply.data


def test_wait_for_event_resumes_on_the_matching_event_only(steps: CelerySteps) -> None:
    declare_waiter(steps)
    run_7 = start(steps, "shop/order.created", {"order_id": 7})
    run_8 = start(steps, "shop/order.created", {"order_id": 8})
    assert steps.get_run(run_7).status == "waiting"

    steps.send("shop/order.approved", data={"order_id": 7, "by": "bot"})  # if_exp says no
    steps.send("shop/order.approved", data={"order_id": 8, "by": "ann"})
    steps.send("shop/order.approved", data={"order_id": 7, "by": "bob"})

    assert steps.get_run(run_7).output == {"order_id": 7, "by": "bob"}
    assert steps.get_run(run_8).output == {"order_id": 8, "by": "ann"}


def test_wait_for_event_returns_none_on_timeout(steps: CelerySteps, clock: FakeClock) -> None:
    declare_waiter(steps)
    run_id = start(steps, "shop/order.created", {"order_id": 1})

    clock.advance(timedelta(days=2))
    poll_once(steps.runtime)
    steps.send("shop/order.approved", data={"order_id": 1, "by": "late"})  # after the timeout

    run = steps.get_run(run_id)
    assert run.status == "completed" and run.output is None


def test_an_event_sent_before_the_wait_began_does_not_match(
    steps: CelerySteps, clock: FakeClock
) -> None:
    declare_waiter(steps)
    steps.send("shop/order.approved", data={"order_id": 3, "by": "early"})
    clock.advance(1)
    run_id = start(steps, "shop/order.created", {"order_id": 3})

    assert steps.get_run(run_id).status == "waiting"


def test_an_event_and_a_timeout_racing_resolve_to_one_outcome(
    steps: CelerySteps, clock: FakeClock
) -> None:
    declare_waiter(steps)
    run_id = start(steps, "shop/order.created", {"order_id": 5})
    clock.advance(timedelta(days=2))  # the timeout is due but not yet processed

    steps.send("shop/order.approved", data={"order_id": 5, "by": "ann"})
    poll_once(steps.runtime)

    run = steps.get_run(run_id)
    assert run.status == "completed"
    assert run.output == {"order_id": 5, "by": "ann"}  # the event claimed the wait first
    assert [s.attempts for s in run.steps] == [1]


def test_cancel_stops_a_sleeping_run_and_a_waiting_run(steps: CelerySteps) -> None:
    declare_waiter(steps)

    @steps.function(id="napper", trigger="t/nap")
    def napper(ctx: Context) -> None:
        ctx.step.sleep("nap", "1h")

    sleeping = start(steps, "t/nap")
    waiting = start(steps, "shop/order.created", {"order_id": 9})
    steps.cancel(sleeping)
    steps.cancel(waiting)
    steps.send("shop/order.approved", data={"order_id": 9, "by": "ann"})

    assert steps.get_run(sleeping).status == "cancelled"
    assert steps.get_run(waiting).status == "cancelled"
    assert steps.get_run(waiting).output is None
    steps.cancel(sleeping)  # cancelling an ended run changes nothing
    assert steps.get_run(sleeping).status == "cancelled"


def test_cancel_on_a_matching_event_cancels_the_run(steps: CelerySteps) -> None:
    @steps.function(id="reminder", trigger="cart/created",
                    cancel_on=[CancelOn("cart/checked_out", match="data.cart_id")])
    def reminder(ctx: Context) -> None:
        ctx.step.sleep("wait", "1d")
        ctx.step.run("remind", lambda: "email")

    cart_1 = start(steps, "cart/created", {"cart_id": 1})
    cart_2 = start(steps, "cart/created", {"cart_id": 2})
    steps.send("cart/checked_out", data={"cart_id": 1})

    assert steps.get_run(cart_1).status == "cancelled"
    assert steps.get_run(cart_2).status == "sleeping"
    assert "cart/checked_out" in (steps.get_run(cart_1).error or {}).get("message", "")


def test_timeouts_finish_cancels_a_run_that_runs_too_long(
    steps: CelerySteps, clock: FakeClock
) -> None:
    @steps.function(id="bounded", trigger="t/bounded", timeouts=Timeouts(finish="1h"))
    def bounded(ctx: Context) -> None:
        ctx.step.sleep("long", "1d")

    run = settle(steps, start(steps, "t/bounded"))

    assert run.status == "cancelled"
    assert run.error is not None and "timeouts.finish" in run.error["message"]
    assert run.ended_at == datetime.fromtimestamp(clock.now_ms() / 1000, tz=timezone.utc)


def test_an_event_with_a_future_ts_triggers_at_that_time(
    steps: CelerySteps, clock: FakeClock
) -> None:
    @steps.function(id="later", trigger="t/later")
    def later(ctx: Context) -> int:
        return ctx.event.ts

    due = clock.now_ms() + 3_600_000
    [event_id] = steps.send(Event(name="t/later", ts=due))
    assert steps.runs_for_event(event_id, timeout=0.05) == []

    clock.advance(timedelta(hours=1))
    poll_once(steps.runtime)

    [run] = steps.runs_for_event(event_id)
    assert run.output == due


def test_replay_starts_a_new_run_on_the_same_events(steps: CelerySteps) -> None:
    @steps.function(id="replayable", trigger="t/replay")
    def replayable(ctx: Context) -> Any:
        return ctx.event.data

    original = start(steps, "t/replay", {"x": 1})
    again = steps.replay(original)

    assert again != original
    assert steps.get_run(again).output == {"x": 1}
    assert steps.get_run(again).event_ids == steps.get_run(original).event_ids


def test_a_match_path_missing_from_the_trigger_never_matches_and_breaks_nothing(
    steps: CelerySteps,
) -> None:
    declare_waiter(steps)

    @steps.function(id="cart", trigger="cart/created",
                    cancel_on=[CancelOn("cart/checked_out", match="data.cart_id")])
    def cart(ctx: Context) -> None:
        ctx.step.sleep("wait", "1d")

    # given runs whose trigger events lack the matched field
    waiting = start(steps, "shop/order.created", {"no_order_id": True})
    sleeping = start(steps, "cart/created", {})

    # when events with and without the field arrive
    [event_id] = steps.send("cart/checked_out", data={})
    steps.send("cart/checked_out", data={"cart_id": 1})
    steps.send("shop/order.approved", data={"by": "ann"})

    # then routing works, and neither run is resumed or cancelled by a missing value
    assert steps.runtime.store.routed_runs(event_id) == []
    assert steps.get_run(waiting).status == "waiting"
    assert steps.get_run(sleeping).status == "sleeping"
