"""Cron triggers as beat-schedule entries.

Each cron trigger becomes one ``beat_schedule`` entry (``celery_steps.cron.<fn>.<n>``) that
sends the tick task every minute with a plain ``crontab()``, so django-celery-beat and redbeat
(which import ``beat_schedule``) work too. The tick task computes, with croniter in the
trigger's time zone, the latest fire time and starts the run through an event whose id is
``cron:<fn>:<tick>``: two beat processes, or a late and an early tick, dedupe to one run.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Celery
from celery.schedules import crontab

from celery_steps.events import CRON_EVENT, Event
from celery_steps.functions import Function
from celery_steps.integration.transport import CRON_TASK
from celery_steps.runtime import Runtime

log = logging.getLogger("celery_steps.crons")
CATCH_UP = timedelta(minutes=2)


def entry_name(fn: Function, index: int) -> str:
    return f"celery_steps.cron.{fn.id}.{index}"


def add_beat_entries(app: Celery, fn: Function) -> None:
    schedule = app.conf.beat_schedule
    if schedule is None:
        schedule = app.conf.beat_schedule = {}
    for index, _ in enumerate(fn.crons):
        schedule[entry_name(fn, index)] = {
            "task": CRON_TASK,
            "schedule": crontab(),
            "args": (fn.id, index),
            "options": {"expires": 55},
        }


def fire_cron(runtime: Runtime, function_id: str, index: int) -> str | None:
    """Start the run for the latest due tick, once. Returns the event id when one was due."""
    fn = runtime.registry.by_id.get(function_id)
    if fn is None or index >= len(fn.crons):
        log.warning("cron tick for unknown function %r ignored", function_id)
        return None
    schedule = fn.crons[index]
    now = runtime.clock.now()
    fire = schedule.latest_at_or_before(now)
    if fire is None or now - fire > CATCH_UP:
        return None
    tick = schedule.tick_id(fire)
    event = Event(
        name=CRON_EVENT,
        id=f"cron:{fn.id}:{tick}",
        data={"cron": schedule.expression, "tz": schedule.tz_name, "tick": tick,
              "function_id": fn.id},
        ts=runtime.clock.now_ms(),
    )
    run_id = runtime.start_cron_run(fn, event)
    log.info("cron tick %s of %s: run %s", tick, fn.id, run_id)
    return event.id
