"""Durable functions of the shop, found by ``celery_steps.contrib.django`` at start-up.

Handlers replay from the top on every resume, so they stay deterministic: everything that
talks to the outside world (payments, stock, email) happens inside ``ctx.step.run``.
"""

from __future__ import annotations

from typing import Any

from proj.celery import steps

from celery_steps import Context


def charge_card(order_id: int, amount_cents: int, idempotency_key: str) -> dict[str, Any]:
    """Pretend to call a payment provider; the key makes a repeated charge harmless."""
    return {"charge_id": f"ch_{order_id}", "amount_cents": amount_cents,
            "idempotency_key": idempotency_key}


def reserve_stock(ctx: Context, items: list[dict[str, Any]]) -> dict[str, int]:
    """Reserve the items; the warehouse is 'busy' on the first attempt, to show a retry."""
    if ctx.attempt == 0:
        raise ConnectionError("warehouse service unavailable, try again")
    return {item["sku"]: int(item["qty"]) for item in items}


def send_confirmation_email(email: str, order_id: int) -> str:
    """Pretend to send an email; returns the message id."""
    return f"msg_order_{order_id}_{email.split('@')[0]}"


@steps.function(id="process-order", trigger="shop/order.paid", retries=3)
def process_order(ctx: Context) -> dict[str, Any]:
    """Charge, reserve stock (retried once), then email the customer."""
    order = ctx.event.data
    charge = ctx.step.run(
        "charge-card", charge_card, order["order_id"], order["amount_cents"],
        idempotency_key=f"{ctx.run_id}:charge-card",
    )
    reserved = ctx.step.run("reserve-stock", reserve_stock, ctx, order["items"])
    message_id = ctx.step.run(
        "send-confirmation-email", send_confirmation_email, order["email"], order["order_id"],
    )
    ctx.logger.info("order %s processed", order["order_id"])
    return {
        "order_id": order["order_id"],
        "charge_id": charge["charge_id"],
        "reserved": reserved,
        "email_message_id": message_id,
    }


@steps.function(id="loyalty-points", trigger="shop/order.paid")
def loyalty_points(ctx: Context) -> dict[str, Any]:
    """Fan-out: the same event also credits loyalty points, in its own run."""
    order = ctx.event.data
    points = ctx.step.run("compute-points", lambda: order["amount_cents"] // 100)
    balance = ctx.step.run("credit-points", lambda: {"email": order["email"], "points": points})
    return {"order_id": order["order_id"], **balance}
