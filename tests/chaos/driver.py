"""The chaos workload's driver: sends the orders, their confirmations and the cron ticks.

Everything it sends has an explicit id, so sending again after an error (Redis down, the
connection killed) is safe: a duplicate id starts nothing new. Some orders and confirmations
are also sent twice on purpose, and some orders get a second, different confirmation (the
wait takes the first one routed).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from celery_steps.store.redis import RedisStore
from tests.chaos.ledger import Ledger
from tests.chaos.workload import CRON, CRON_TASK

SEND_PATIENCE = 120.0  # seconds an event keeps being re-sent before the driver gives up
CRON_EVERY = 5.0  # seconds between two cron task sends (a tick per minute: ~12 sends each)


@dataclass(frozen=True)
class OrderPlan:
    """One order: its event, and what the driver does around it (drawn from the seed)."""

    index: int
    event_id: str
    data: dict[str, Any]
    confirm: bool  # send a chaos/confirm once its run waits (else it stays waiting)
    resend: bool  # send the order event a second time, same id
    second_confirm: bool  # also send a different confirmation for the same order
    confirm_twice: bool  # send the confirmation a second time, same id


def plan_orders(rng: random.Random, seed: int, n: int, confirm_share: float) -> list[OrderPlan]:
    plans = []
    for i in range(n):
        data = {"order": i, "customer": i % 4, "work": round(rng.uniform(0.02, 0.15), 3),
                "sleep": round(rng.uniform(1.0, 2.0), 3), "cents": rng.randrange(100, 10_000),
                "charge": round(rng.uniform(0.1, 0.4), 3)}
        plans.append(OrderPlan(i, f"order-{seed}-{i}", data, rng.random() < confirm_share,
                               rng.random() < 0.1, rng.random() < 0.1, rng.random() < 0.1))
    return plans


@dataclass
class Sent:
    """What the driver sent, and when (``time.time()`` once the send returned)."""

    orders: dict[int, float] = field(default_factory=dict)
    confirms: dict[int, list[tuple[str, float]]] = field(default_factory=dict)
    waits_seen: dict[int, float] = field(default_factory=dict)  # order -> its wait was stored
    cron_sends: list[float] = field(default_factory=list)
    send_errors: int = 0


class Driver:
    """Sends the workload through the chaos app's ``steps`` facade, from the test process."""

    def __init__(self, app: ModuleType, ledger: Ledger, plans: list[OrderPlan], *,
                 max_inflight: int) -> None:
        self.app = app
        self.steps = app.steps
        self.store: RedisStore = app.steps.runtime.store
        self.ledger = ledger
        self.plans = plans
        self.by_event = {p.event_id: p for p in plans}
        self.max_inflight = max_inflight
        self.sent = Sent()
        self._resends: list[tuple[float, str, dict[str, Any]]] = []
        self._handled: set[str] = set()
        self._next_cron = 0.0
        self._progress_at = time.monotonic()
        self.all_sent_at: float | None = None  # monotonic time the last order went out

    # -- one round of the loop -------------------------------------------------------------------
    def step(self, *, cron: bool = True) -> None:
        """Send what is due now: new orders, confirmations, re-sends, a cron tick."""
        self._submit()
        self._confirm()
        now = time.monotonic()
        for due, name, fields in [r for r in self._resends if r[0] <= now]:
            self._resends.remove((due, name, fields))
            self._send(name, fields)
        if cron and now >= self._next_cron:
            self._next_cron = now + CRON_EVERY
            self._send_cron()

    @property
    def all_waiting(self) -> bool:
        """Every order was sent and its run has reached its wait."""
        return len(self.sent.waits_seen) == len(self.plans)

    def _submit(self) -> None:
        stalled = time.monotonic() - self._progress_at > 30  # never jam on a stuck order
        while len(self.sent.orders) < len(self.plans):
            inflight = len(self.sent.orders) - len(self.sent.waits_seen)
            if inflight >= self.max_inflight and not stalled:
                return
            plan = self.plans[len(self.sent.orders)]
            self._send("chaos/order", {"id": plan.event_id, "data": plan.data})
            self.sent.orders[plan.index] = time.time()
            if plan.resend:
                self._later(0.5, "chaos/order", {"id": plan.event_id, "data": plan.data})
            stalled = False
            self._progress_at = time.monotonic()
        if self.all_sent_at is None:
            self.all_sent_at = time.monotonic()

    def _confirm(self) -> None:
        """Confirm the orders whose wait is stored (an event sent earlier would not count)."""
        for run_id in sorted(self.ledger.members("at-wait") - self._handled):
            run = self.store.load_run(run_id)
            state = None if run is None else run.steps.get("confirm")
            if run is None or state is None:
                continue
            self._handled.add(run_id)
            plan = self.by_event[run.event_ids[0]]
            self.sent.waits_seen[plan.index] = time.time()
            self._progress_at = time.monotonic()
            if not plan.confirm or state["status"] != "waiting":
                continue
            ids = [f"confirm-{plan.event_id}"]
            if plan.second_confirm:
                ids.append(f"confirm-{plan.event_id}-b")
            for event_id in ids:
                self._send("chaos/confirm", {"id": event_id, "data": {"order": plan.index}})
                self.sent.confirms.setdefault(plan.index, []).append((event_id, time.time()))
            if plan.confirm_twice:
                self._later(0.3, "chaos/confirm", {"id": ids[0], "data": {"order": plan.index}})

    # -- sending -----------------------------------------------------------------------------------
    def _later(self, delay: float, name: str, fields: dict[str, Any]) -> None:
        self._resends.append((time.monotonic() + delay, name, fields))

    def _send(self, name: str, fields: dict[str, Any]) -> None:
        """Send one event, again and again (same id) until the store took it."""
        deadline = time.monotonic() + SEND_PATIENCE
        while True:
            try:
                self.steps.send(name, fields["data"], id=fields["id"])
                return
            except Exception:
                self.sent.send_errors += 1
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _send_cron(self) -> None:
        for _ in range(3):  # a tick whose send failed is one tick less, nothing more
            try:
                self.app.app.send_task(CRON_TASK, args=[CRON, 0],
                                        ignore_result=True)
            except Exception:
                self.sent.send_errors += 1
                time.sleep(0.2)
                continue
            self.sent.cron_sends.append(time.time())
            return
