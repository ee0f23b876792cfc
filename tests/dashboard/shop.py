"""The functions the dashboard tests look at: a shop whose runs have every kind of step.

``declare(steps)`` registers them on any CelerySteps; steps "work" by moving a FakeClock, so
timelines have real durations without waiting.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery_steps import (
    CelerySteps,
    Concurrency,
    Context,
    NonRetriableError,
    RateLimit,
    StepError,
    TriggerCron,
    TriggerEvent,
)
from celery_steps.clock import FakeClock
from celery_steps.functions import Function

ESCAPE_PROBE = "<script>alert(1)</script>"
BROKEN_MESSAGE = "<b>warehouse</b> said <i>no</i>"
WAREHOUSE_DOWN = "warehouse API answered 503 Service Unavailable"


def declare(steps: CelerySteps) -> dict[str, Function]:
    """Register the shop's functions on ``steps``; returns them by id."""
    calls: dict[str, int] = {}

    def work(ms: int, result: Any = None) -> Any:
        if isinstance(steps.clock, FakeClock):
            steps.clock.advance(timedelta(milliseconds=ms))
        return result

    def flaky(key: str) -> str:
        calls[key] = calls.get(key, 0) + 1
        work(150)
        if calls[key] == 1:
            raise ConnectionError("card processor timed out")
        return "ch_1"

    def broken(message: str = BROKEN_MESSAGE) -> None:
        work(80)
        raise NonRetriableError(message)

    @steps.function(id="render-receipt", trigger="shop/receipt.requested")
    def render_receipt(ctx: Context) -> dict[str, str]:
        return ctx.step.run("render-pdf", work, 300, {"pdf": "receipt.pdf"})  # type: ignore[no-any-return]

    @steps.function(id="checkout", trigger=[TriggerEvent("shop/order.paid"),
                                            TriggerCron("0 9 * * *", tz="Europe/Paris")],
                    retries=3, concurrency=Concurrency(5, key="event.data.customer"),
                    rate_limit=RateLimit(100, "1m"))
    def checkout(ctx: Context) -> dict[str, Any]:
        order = ctx.event.data.get("order", 0)
        ctx.step.run("reserve-stock", work, 350, {"reserved": order})
        charge = ctx.step.run("charge-card", flaky, f"{ctx.run_id}")
        try:
            ctx.step.run("notify-warehouse", broken, WAREHOUSE_DOWN)
        except StepError:
            ctx.step.run("notify-by-email", work, 120, "queued")
        ctx.step.sleep("cool-off", "2s")
        receipt = ctx.step.invoke("receipt", function=render_receipt, data={"order": order})
        return {"charge": charge, "receipt": receipt}

    @steps.function(id="ship", trigger="shop/order.ship", retries=0)
    def ship(ctx: Context) -> str:
        ctx.step.run("pack", work, 200, "packed")
        ctx.step.sleep("wait-for-courier", "1h")
        delivered = ctx.step.wait_for_event("delivered", event="shop/delivered", timeout="3d",
                                            match="data.order")
        return "delivered" if delivered else "lost"

    @steps.function(id="explode", trigger="shop/explode", retries=0)
    def explode(ctx: Context) -> None:
        ctx.step.run("boom", broken)

    return {fn.id: fn for fn in (render_receipt, checkout, ship, explode)}
