"""``celery_steps.testing``: run_function runs a whole function in-process with a fake clock."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from celery_steps import Context, Event
from celery_steps.clock import FakeClock
from celery_steps.testing import TestResult, eager_steps, run_function, settle

# A throwaway app: run_function copies each function onto a fresh app of its own.
steps = eager_steps()
charged: list[int] = []


def charge(order_id: int) -> dict[str, Any]:
    charged.append(order_id)
    return {"charge_id": f"ch_{order_id}"}


@steps.function(id="ship-after-a-week", trigger="shop/order.paid")
def ship_after_a_week(ctx: Context) -> dict[str, Any]:
    order_id = ctx.event.data["order_id"]
    charge_result = ctx.step.run("charge", charge, order_id)
    ctx.step.sleep("cool-off", "7d")
    shipped = ctx.step.wait_for_event("wait-shipped", event="shop/order.shipped",
                                      timeout="3d", match="data.order_id")
    if shipped is None:
        return {"charge": charge_result, "carrier": None}
    return {"charge": charge_result, "carrier": shipped.data["carrier"]}


def test_a_week_long_sleep_and_a_stubbed_wait_finish_at_once() -> None:
    charged.clear()
    shipped = {"name": "shop/order.shipped", "data": {"order_id": 7, "carrier": "ups"}}
    wall = time.monotonic()

    result = run_function(ship_after_a_week, data={"order_id": 7},
                          waits={"wait-shipped": shipped})

    assert isinstance(result, TestResult)
    assert time.monotonic() - wall < 5  # seven days of sleep took no real time
    assert result.status == "completed" and result.error is None
    assert result.output == {"charge": {"charge_id": "ch_7"}, "carrier": "ups"}
    assert result.clock.now() - result.run.created_at >= timedelta(days=7)
    assert charged == [7]  # the step ran once, though the handler replayed after the sleep


def test_a_stubbed_event_arrives_without_the_clock_running_to_the_wait_timeout() -> None:
    result = run_function(ship_after_a_week, data={"order_id": 11},
                          waits={"wait-shipped": {"name": "shop/order.shipped",
                                                  "data": {"order_id": 11, "carrier": "ups"}}})

    assert result.output is not None and result.output["carrier"] == "ups"
    assert result.clock.now() - result.run.created_at < timedelta(days=8)


def test_a_wait_stubbed_with_none_takes_the_timeout_path() -> None:
    result = run_function(ship_after_a_week, data={"order_id": 8}, waits={"wait-shipped": None})

    assert result.status == "completed"
    assert result.output == {"charge": {"charge_id": "ch_8"}, "carrier": None}


def test_a_wait_left_unstubbed_times_out_on_the_fake_clock() -> None:
    result = run_function(ship_after_a_week, data={"order_id": 9})

    assert result.output == {"charge": {"charge_id": "ch_9"}, "carrier": None}
    assert result.clock.now() - result.run.created_at >= timedelta(days=10)  # 7d sleep + 3d wait


def test_the_result_lists_every_step_in_order_with_its_op() -> None:
    result = run_function(ship_after_a_week, data={"order_id": 10},
                          waits={"wait-shipped": Event(name="shop/order.shipped",
                                                       data={"order_id": 10, "carrier": "dhl"})})

    assert [(s.id, s.op, s.status) for s in result.steps] == [
        ("charge", "run", "completed"),
        ("cool-off", "sleep", "completed"),
        ("wait-shipped", "wait_for_event", "completed"),
    ]
    assert result.run.function_id == "ship-after-a-week"
    assert result.run.ended_at is not None


def test_a_failing_function_reports_its_error_after_its_retries() -> None:
    attempts: list[int] = []
    local = eager_steps()

    @local.function(id="always-fails", trigger="t/fail", retries=2)
    def always_fails(ctx: Context) -> None:
        ctx.step.run("flaky", lambda: attempts.append(1) or 1 / 0)

    result = run_function(always_fails)

    assert result.status == "failed"
    assert result.error is not None
    assert (result.error["name"], result.error["message"]) == (
        "ZeroDivisionError", "division by zero")
    assert len(attempts) == 3
    assert [(s.id, s.attempts) for s in result.steps] == [("flaky", 3)]


def test_eager_steps_and_settle_drive_functions_that_call_each_other() -> None:
    clock = FakeClock()
    app_steps = eager_steps(clock)

    @app_steps.function(id="quote", trigger="t/never")
    def quote(ctx: Context) -> int:
        ctx.step.sleep("think", "2h")
        return int(ctx.step.run("price", lambda: ctx.event.data["qty"] * 3))

    @app_steps.function(id="order", trigger="t/order")
    def order(ctx: Context) -> int:
        return int(ctx.step.invoke("get-quote", function=quote, data={"qty": 5}))

    [event_id] = app_steps.send("t/order")
    [run] = app_steps.runs_for_event(event_id)
    start = clock.now()

    done = settle(app_steps, run.id)

    assert done.status == "completed" and done.output == 15
    assert clock.now() - start >= timedelta(hours=2)
    [child] = app_steps.list_runs(function_id="quote")
    assert child.parent_run_id == run.id
