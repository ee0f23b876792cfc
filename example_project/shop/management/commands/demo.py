"""``python example_project/manage.py demo``: run the shop's order flow end to end.

Starts a Celery worker in this process (a thread pool), sends a few ``shop/order.paid``
events and one ``shop/stock.low`` event (a restock: parallel steps, an invoked function and
a fan-out of events), and prints every run they started, with its steps. Exits 1 unless all
completed.
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from celery_steps import Run
from celery_steps.contrib.django import send_on_commit

ORDERS = [
    {"order_id": 1001, "email": "ada@example.com", "amount_cents": 4599,
     "items": [{"sku": "book-celery", "qty": 1}, {"sku": "mug", "qty": 2}]},
    {"order_id": 1002, "email": "grace@example.com", "amount_cents": 1250,
     "items": [{"sku": "sticker-pack", "qty": 5}]},
    {"order_id": 1003, "email": "linus@example.com", "amount_cents": 9900,
     "items": [{"sku": "keyboard", "qty": 1}]},
]
RESTOCK = {"sku": "mug", "qty": 40, "warehouses": ["paris", "lyon"]}


class Command(BaseCommand):
    help = "Run the example order flow on an in-process Celery worker and print the runs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--timeout", type=float, default=60.0,
                            help="seconds to wait for each run to end (default 60)")

    def handle(self, *args: Any, **options: Any) -> None:
        from celery.contrib.testing.worker import start_worker
        from proj.celery import app, steps

        timeout = float(options["timeout"])
        self.stdout.write(f"broker: {app.conf.broker_url}")
        self.stdout.write(f"functions: {', '.join(sorted(steps.functions))}")
        runs: list[Run] = []
        batch = uuid.uuid4().hex[:8]  # fresh event ids: a re-sent id is deduplicated for 24h
        started_at = time.monotonic()
        with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False,
                          loglevel="WARNING", shutdown_timeout=30.0):
            event_ids: list[str] = []
            for order in ORDERS[:2]:
                event_ids += steps.send("shop/order.paid", data=order,
                                        id=f"order-{order['order_id']}-paid-{batch}")
            # The last order is sent the Django way: only once its transaction commits.
            with transaction.atomic():
                order = ORDERS[2]
                event_ids += send_on_commit(steps, "shop/order.paid", data=order,
                                            id=f"order-{order['order_id']}-paid-{batch}")
            for event_id in event_ids:
                started = steps.runs_for_event(event_id, timeout=timeout)
                if not started:
                    self.stdout.write(f"event {event_id}: no run started (already sent?)")
                for run in started:
                    try:
                        runs.append(steps.wait_for_run(run.id, timeout=timeout))
                    except TimeoutError as exc:
                        self.stdout.write(f"event {event_id}: {exc}")
                        runs.append(steps.get_run(run.id))
            runs += self._restock(steps, batch, timeout)
        elapsed = time.monotonic() - started_at
        for run in runs:
            self._print_run(run)
        ok = bool(runs) and all(run.status == "completed" for run in runs)
        # two runs per order, then restock-warehouse, the quote-supplier run it invoked and
        # one notify-warehouse run per warehouse
        expected = len(ORDERS) * 2 + 2 + len(RESTOCK["warehouses"])
        ok = ok and len(runs) == expected
        self.stdout.write(f"\n{sum(r.status == 'completed' for r in runs)}/{expected} runs "
                          f"completed in {elapsed:.1f}s: {'OK' if ok else 'FAILED'}")
        sys.stdout.flush()
        if not ok:
            sys.exit(1)

    def _restock(self, steps: Any, batch: str, timeout: float) -> list[Run]:
        """Send shop/stock.low; collect the restock run, its child and the runs it fanned out."""
        [event_id] = steps.send("shop/stock.low", data=RESTOCK, id=f"stock-low-mug-{batch}")
        runs: list[Run] = []
        for run in steps.runs_for_event(event_id, timeout=timeout):
            try:
                restock = steps.wait_for_run(run.id, timeout=timeout)
            except TimeoutError as exc:
                self.stdout.write(f"event {event_id}: {exc}")
                return [*runs, steps.get_run(run.id)]
            runs.append(restock)
            runs += [child for child in steps.list_runs(function_id="quote-supplier")
                     if child.parent_run_id == restock.id]
            for sent_id in (restock.output or {}).get("notified", []):
                for notified in steps.runs_for_event(sent_id, timeout=timeout):
                    try:
                        runs.append(steps.wait_for_run(notified.id, timeout=timeout))
                    except TimeoutError as exc:
                        self.stdout.write(f"event {sent_id}: {exc}")
                        runs.append(steps.get_run(notified.id))
        return runs

    def _print_run(self, run: Run) -> None:
        self.stdout.write(f"\nrun {run.id}  function={run.function_id}  status={run.status}")
        for step in run.steps:
            self.stdout.write(f"  step {step.id:<26} {step.status:<10} attempts={step.attempts}")
        if run.error:
            self.stdout.write(f"  error: {run.error['name']}: {run.error['message']}")
        self.stdout.write(f"  output: {run.output}")
