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


# -- Restocking: parallel steps, invoking another function, and sending events -----------------

SUPPLIER_LIST_PRICES = {"acme": 410, "globex": 385, "initech": 440}  # cents per unit


def supplier_price(supplier: str, sku: str, qty: int) -> dict[str, Any]:
    """Pretend to ask a supplier's API for its list price."""
    return {"supplier": supplier, "sku": sku, "qty": qty,
            "total_cents": SUPPLIER_LIST_PRICES[supplier] * qty}


def firm_quote(supplier: str, sku: str, qty: int, total_cents: int) -> dict[str, Any]:
    """Pretend to get a binding quote from the supplier."""
    return {"quote_id": f"q_{supplier}_{sku}_{qty}", "supplier": supplier, "sku": sku,
            "qty": qty, "total_cents": total_cents}


@steps.function(id="quote-supplier", trigger="shop/quote.requested")
def quote_supplier(ctx: Context) -> dict[str, Any]:
    """A small function of its own: invoked by restock-warehouse, or started by an event."""
    data = ctx.event.data
    return ctx.step.run("firm-quote", firm_quote, data["supplier"], data["sku"],
                        int(data["qty"]), int(data["total_cents"]))


@steps.function(id="restock-warehouse", trigger="shop/stock.low")
def restock_warehouse(ctx: Context) -> dict[str, Any]:
    """Price every supplier in parallel, get a firm quote from the cheapest, notify warehouses."""
    sku, qty = ctx.event.data["sku"], int(ctx.event.data["qty"])
    prices = ctx.step.parallel(tuple(
        (lambda supplier=supplier: ctx.step.run(f"price-{supplier}", supplier_price,
                                                supplier, sku, qty))
        for supplier in sorted(SUPPLIER_LIST_PRICES)
    ))
    best = min(prices, key=lambda price: price["total_cents"])
    quote = ctx.step.invoke("quote-supplier", function=quote_supplier, data=best, timeout="1h")
    event_ids = ctx.step.send_event("notify-warehouses", [
        {"name": "shop/restock.ordered",
         "data": {"warehouse": warehouse, "sku": sku, "qty": qty, "quote_id": quote["quote_id"]}}
        for warehouse in ctx.event.data.get("warehouses", ["main"])
    ])
    return {"sku": sku, "quote": quote, "notified": event_ids}


@steps.function(id="notify-warehouse", trigger="shop/restock.ordered")
def notify_warehouse(ctx: Context) -> dict[str, Any]:
    """One run per warehouse: the fan-out of restock-warehouse's send_event."""
    data = ctx.event.data
    message = ctx.step.run(
        "tell-warehouse",
        lambda: f"{data['warehouse']}: expect {data['qty']} x {data['sku']} ({data['quote_id']})",
    )
    return {"warehouse": data["warehouse"], "message": message}
