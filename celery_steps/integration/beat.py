"""Cron triggers as beat-schedule entries.

Each cron trigger becomes one ``beat_schedule`` entry, ``celery_steps.cron.<fn>.<n>``: a real
:class:`ZonedCrontab` (a Celery ``crontab`` evaluated in the trigger's time zone) that sends
the ``celery_steps.cron`` task at the trigger's fire times. Beat, django-celery-beat (which
copies ``beat_schedule`` into its tables, time zone included) and redbeat show and run the
true schedule. The task takes the fire time at or just before now (computed with croniter in
the same zone) and starts the run through an event whose id is ``cron:<fn>:<tick>``: two beat
processes, or a tick sent twice, dedupe to one run.

Entries of functions that no longer exist are dropped from ``beat_schedule`` when the app is
finalized, and from the running scheduler when beat starts (``beat_init``); with
django-celery-beat's ``DatabaseScheduler`` their ``PeriodicTask`` rows are deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from celery import Celery
from celery.schedules import crontab
from celery.signals import beat_init

from celery_steps.crons import CronSchedule
from celery_steps.events import CRON_EVENT, Event
from celery_steps.functions import Function, Registry
from celery_steps.integration.bootstep import runtime_of
from celery_steps.integration.transport import CRON_TASK
from celery_steps.runtime import Runtime

log = logging.getLogger("celery_steps.crons")

ENTRY_PREFIX = "celery_steps.cron."
CATCH_UP = timedelta(minutes=5)
"""A tick that reaches a worker later than this after its fire time starts nothing."""
EARLY = timedelta(seconds=10)
"""A tick that arrives this much before its fire time (clock skew) counts for that time."""


class ZonedCrontab(crontab):  # type: ignore[misc]
    """A Celery ``crontab`` evaluated in its own time zone, whatever ``app.timezone`` is.

    django-celery-beat stores ``tz`` in ``CrontabSchedule.timezone``. ``nowfun`` is for tests.
    """

    def __init__(self, minute: str = "*", hour: str = "*", day_of_week: str = "*",
                 day_of_month: str = "*", month_of_year: str = "*", tz: str | tzinfo = "UTC",
                 nowfun: Callable[[], datetime] | None = None, app: Celery | None = None) -> None:
        self.tz: tzinfo = ZoneInfo(tz) if isinstance(tz, str) else tz
        super().__init__(minute=minute, hour=hour, day_of_week=day_of_week,
                         day_of_month=day_of_month, month_of_year=month_of_year,
                         nowfun=nowfun, app=app)

    @property
    def tz_name(self) -> str:
        return str(getattr(self.tz, "key", self.tz))

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self._orig_minute, self._orig_hour, self._orig_day_of_week,
                                 self._orig_day_of_month, self._orig_month_of_year,
                                 self.tz_name))

    def __repr__(self) -> str:
        return (f"<crontab: {self._orig_minute} {self._orig_hour} {self._orig_day_of_month} "
                f"{self._orig_month_of_year} {self._orig_day_of_week} (m/h/dM/MY/d) "
                f"{self.tz_name}>")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, crontab):
            return bool(super().__eq__(other)) and getattr(other, "tz", None) == self.tz
        return NotImplemented


def entry_name(fn: Function, index: int) -> str:
    return f"{ENTRY_PREFIX}{fn.id}.{index}"


def beat_crontab(schedule: CronSchedule) -> ZonedCrontab:
    """The beat schedule of a cron trigger: the same fire times, in the same zone."""
    f = schedule.crontab_fields()
    return ZonedCrontab(minute=f.minute, hour=f.hour, day_of_week=f.day_of_week,
                        day_of_month=f.day_of_month, month_of_year=f.month_of_year,
                        tz=schedule.tz_name)


def add_beat_entries(app: Celery, fn: Function) -> None:
    schedule = app.conf.beat_schedule
    if schedule is None:
        schedule = app.conf.beat_schedule = {}
    expires = int(CATCH_UP.total_seconds())
    for index, cron in enumerate(fn._crons):
        schedule[entry_name(fn, index)] = {
            "task": CRON_TASK,
            "schedule": beat_crontab(cron),
            "args": (fn.id, index),
            # expire_seconds: what django-celery-beat keeps (it drops "expires")
            "options": {"expires": expires, "expire_seconds": expires},
        }


def entry_names(registry: Registry) -> set[str]:
    """The beat entries the registered functions' cron triggers need."""
    return {entry_name(fn, index) for fn in list(registry.by_id.values())
            for index in range(len(fn._crons))}


def stale(names: Iterable[str], registry: Registry) -> list[str]:
    """Our entries (by name) that no registered cron trigger needs any more."""
    wanted = entry_names(registry)
    return [name for name in names if name.startswith(ENTRY_PREFIX) and name not in wanted]


def drop_stale_entries(app: Celery, registry: Registry) -> None:
    """Remove ``celery_steps.cron.*`` entries of removed functions from ``beat_schedule``."""
    schedule = app.conf.beat_schedule or {}
    for name in stale(list(schedule), registry):
        del schedule[name]


def prune_scheduler(scheduler: Any, registry: Registry) -> list[str]:
    """Drop stale cron entries from a running beat scheduler (and django-celery-beat's table).

    Returns the names removed. Never raises: beat keeps running whatever happens here.
    """
    removed: list[str] = []
    model = getattr(scheduler, "Model", None)  # django-celery-beat's PeriodicTask
    manager = getattr(model, "objects", None)
    if manager is not None:
        try:
            rows = manager.filter(name__startswith=ENTRY_PREFIX)
            names = stale(list(rows.values_list("name", flat=True)), registry)
            if names:
                rows.filter(name__in=names).delete()  # signals the change to every beat
                removed.extend(names)
        except Exception:
            log.exception("could not delete the stale cron entries from the database")
    try:
        schedule = scheduler.schedule
        for name in stale(list(schedule), registry):
            schedule.pop(name, None)
            if name not in removed:
                removed.append(name)
    except Exception:
        log.exception("could not drop the stale cron entries from the beat schedule")
    if removed:
        log.info("removed beat entries of cron triggers that no longer exist: %s",
                 ", ".join(sorted(removed)))
    return removed


def on_beat_init(sender: Any, **kwargs: Any) -> None:
    """``beat_init``: drop the entries of removed cron triggers before the first tick."""
    runtime = runtime_of(sender.app)
    if runtime is not None:
        prune_scheduler(sender.scheduler, runtime.registry)


def connect_beat_init() -> None:
    beat_init.connect(on_beat_init, weak=False, dispatch_uid="celery_steps.prune_cron_entries")


def due_fire(schedule: CronSchedule, now: datetime) -> datetime | None:
    """The fire time a tick received at ``now`` is for; None if it is too old.

    The latest fire time at or before now (or up to :data:`EARLY` after, for a worker whose
    clock is behind beat's), if at most :data:`CATCH_UP` old. A fire that croniter moved to
    the end of a spring-forward gap (``30 2 * * *`` fires at 03:00) is sent by Celery's
    crontab up to the gap's length later (at 03:30): that lateness is allowed too.
    """
    fire = schedule.latest_at_or_before(now + EARLY)
    if fire is None:
        return None
    allowed = CATCH_UP
    before = (fire - timedelta(microseconds=1)).astimezone(schedule.tz).utcoffset()
    after = fire.astimezone(schedule.tz).utcoffset()
    if before is not None and after is not None and after > before:
        allowed += after - before
    return fire if now - fire <= allowed else None


def fire_cron(runtime: Runtime, function_id: str, index: int) -> str | None:
    """Start the run for the tick just sent, once. Returns the event id when one was due
    (see :func:`due_fire` for which fire time a tick is for)."""
    fn = runtime.registry.by_id.get(function_id)
    if fn is None or index >= len(fn._crons):
        log.warning("cron tick for unknown function %r ignored", function_id)
        return None
    schedule = fn._crons[index]
    fire = due_fire(schedule, runtime.clock.now())
    if fire is None:
        log.warning("cron tick of %s came more than %s after its fire time: skipped",
                    fn.id, CATCH_UP)
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
