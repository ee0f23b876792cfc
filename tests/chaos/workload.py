"""The names and limits of the chaos workload, shared by its app, driver and checker (which
must not import the app itself: it is configured from the environment when imported)."""

from __future__ import annotations

ORDER, CHARGE, NOTIFY, CRON = "chaos-order", "chaos-charge", "chaos-notify", "chaos-cron"
FUNCTIONS = (ORDER, CHARGE, NOTIFY, CRON)
RECEIPT_TASK = "chaos.receipt"
CRON_TASK = "celery_steps.cron"
CHARGE_LIMIT = 2
NOTIFY_LIMIT = 1  # per customer
RETRIES = 8  # a kill is a failed attempt: leave room for several on one run
WAIT_TIMEOUT = "1h"  # longer than any chaos run: an unconfirmed order is still waiting at the end
