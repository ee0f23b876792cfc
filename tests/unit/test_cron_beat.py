"""Cron triggers as real beat crontabs: fields, time zone, DST, ticks, stale entries."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from celery import Celery
from celery.beat import PersistentScheduler, Service
from celery.signals import beat_init
from croniter import croniter

from celery_steps import CelerySteps, ConfigurationError, Context, TriggerCron
from celery_steps.clock import FakeClock
from celery_steps.crons import parse_cron
from celery_steps.integration.beat import ZonedCrontab, beat_crontab, due_fire, fire_cron
from celery_steps.testing import eager_steps

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")


def utc(iso: str) -> datetime:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC)


def new_app(**conf: Any) -> Celery:
    app = Celery(f"beat_{uuid.uuid4().hex[:6]}", set_as_current=False)
    app.conf.update(steps_store_url="memory://", steps_timer_poller=False, **conf)
    return app


def declare(steps: CelerySteps, fn_id: str, *crons: TriggerCron) -> None:
    @steps.function(id=fn_id, trigger=list(crons))
    def handler(ctx: Context) -> None:
        return None


def beat_fires(schedule: ZonedCrontab, app: Celery, start: datetime, end: datetime,
               step: timedelta = timedelta(minutes=1)) -> list[datetime]:
    """The times a beat checking every ``step`` from ``start`` to ``end`` sends the entry."""
    now = [start]
    schedule.nowfun = lambda: now[0]
    schedule.app = app
    last_run, fires = start, []
    while now[0] < end:
        now[0] += step
        if schedule.is_due(last_run).is_due:
            fires.append(now[0])
            last_run = now[0]
    return fires


def cron_fires(cron: str, tz: str, start: datetime, end: datetime) -> list[datetime]:
    schedule = parse_cron(cron, tz, function_id="f")
    fires, fire = [], schedule.next_after(start)
    while fire <= end:
        fires.append(fire)
        fire = schedule.next_after(fire)
    return fires


# -- the entries ---------------------------------------------------------------------------
def test_a_cron_trigger_is_a_real_crontab_in_the_trigger_time_zone() -> None:
    # given an app whose own time zone differs from the trigger's
    app = new_app(timezone="America/New_York")
    steps = CelerySteps(app)
    declare(steps, "report", TriggerCron("*/15 9-17 * JAN-MAR MON-FRI", tz="Europe/Paris"))

    entry = app.conf.beat_schedule["celery_steps.cron.report.0"]
    schedule = entry["schedule"]

    # then beat reads the true schedule, not an every-minute tick
    assert entry["task"] == "celery_steps.cron"
    assert entry["args"] == ("report", 0)
    assert (schedule._orig_minute, schedule._orig_hour, schedule._orig_day_of_month,
            schedule._orig_month_of_year, schedule._orig_day_of_week) == (
        "*/15", "9-17", "*", "1-3", "1-5")
    assert schedule.minute == {0, 15, 30, 45}
    assert schedule.day_of_week == {1, 2, 3, 4, 5}
    assert schedule.tz == PARIS
    assert entry["options"]["expires"] == entry["options"]["expire_seconds"] == 300


@pytest.mark.parametrize("cron", [
    "0 9 * * *", "*/15 9-17 * JAN-MAR MON-FRI", "0 9 * * 7", "0 9 * * FRI-MON", "@hourly",
    "1-59/10 */3 * * *", "0 0 * * 1-5/2", "0,30 9,10 1,2,3,15 * *", "5 4 */2 * *",
    "0 0 29 2 *", "0 12 * * sun,sat", "30 2 * * *",
])
def test_beat_and_croniter_agree_on_every_field(cron: str) -> None:
    schedule = parse_cron(cron, function_id="f")
    expanded = croniter(schedule.expression).expanded
    tab = beat_crontab(schedule)

    def as_set(values: list[Any], full: range) -> set[int]:
        return set(full) if values == ["*"] else {int(v) % 7 if full == range(7) else int(v)
                                                   for v in values}

    assert tab.minute == as_set(expanded[0], range(60))
    assert tab.hour == as_set(expanded[1], range(24))
    assert tab.day_of_month == as_set(expanded[2], range(1, 32))
    assert tab.month_of_year == as_set(expanded[3], range(1, 13))
    assert tab.day_of_week == as_set(expanded[4], range(7))


@pytest.mark.parametrize(("cron", "problem"), [
    ("0 9 L * *", "L, W or #"),
    ("0 9 * * 1#2", "L, W or #"),
    ("0 9 15W * *", "L, W or #"),
    ("0 9 1 * MON", "two triggers"),
])
def test_crons_celery_cannot_express_are_refused_naming_the_function(
    cron: str, problem: str
) -> None:
    steps = CelerySteps(new_app())
    with pytest.raises(ConfigurationError, match="'monthly'") as info:
        declare(steps, "monthly", TriggerCron(cron))

    assert problem in str(info.value)
    assert "monthly" not in steps.functions
    assert not any("monthly" in name for name in steps.app.conf.beat_schedule or {})


def test_month_and_day_names_are_still_accepted() -> None:
    steps = CelerySteps(new_app())
    declare(steps, "july", TriggerCron("0 9 * JUL WED"))

    schedule = steps.app.conf.beat_schedule["celery_steps.cron.july.0"]["schedule"]
    assert (schedule.month_of_year, schedule.day_of_week) == ({7}, {3})


# -- when beat sends them --------------------------------------------------------------------
@pytest.mark.parametrize(("cron", "start", "end"), [
    # spring forward in Paris: 2026-03-29 02:00 CET -> 03:00 CEST
    ("0 9 * * *", "2026-03-27T00:00", "2026-03-31T00:00"),
    ("30 2 * * *", "2026-03-27T00:00", "2026-03-31T00:00"),
    ("*/30 * * * *", "2026-03-28T23:00", "2026-03-29T03:00"),
    # fall back in Paris: 2026-10-25 03:00 CEST -> 02:00 CET, 02:00-03:00 twice
    ("0 9 * * *", "2026-10-23T00:00", "2026-10-27T00:00"),
    ("30 2 * * *", "2026-10-23T00:00", "2026-10-27T00:00"),
    ("*/30 * * * *", "2026-10-24T22:00", "2026-10-25T03:00"),
])
def test_beat_fires_at_the_cron_wall_times_across_dst_changes(
    cron: str, start: str, end: str
) -> None:
    # given the beat entry of a Paris cron in an app that keeps UTC
    app = new_app(timezone="UTC")
    tab = beat_crontab(parse_cron(cron, "Europe/Paris", function_id="f"))

    schedule = parse_cron(cron, "Europe/Paris", function_id="f")

    # when a beat checks it every minute across the change, and workers take each tick
    sends = beat_fires(tab, app, utc(start), utc(end))
    ticks = [due_fire(schedule, sent) for sent in sends]

    # then each send starts the run of one fire time, and every fire time gets its run
    assert ticks == cron_fires(cron, "Europe/Paris", utc(start), utc(end))
    assert ticks  # the window held fire times


def test_a_daily_paris_cron_fires_at_nine_local_on_both_sides_of_the_change() -> None:
    app = new_app(timezone="UTC")
    tab = beat_crontab(parse_cron("0 9 * * *", "Europe/Paris", function_id="f"))

    fires = beat_fires(tab, app, utc("2026-03-28T00:00"), utc("2026-03-30T00:00"))

    assert fires == [utc("2026-03-28T08:00"), utc("2026-03-29T07:00")]


# -- the tick a worker computes --------------------------------------------------------------
@pytest.mark.parametrize(("received", "tick"), [
    ("2026-06-01T06:59:55", "2026-06-01T09:00"),   # worker clock 5 s behind beat
    ("2026-06-01T07:00:00", "2026-06-01T09:00"),
    ("2026-06-01T07:04:30", "2026-06-01T09:00"),   # a queue backlog of four and a half minutes
    ("2026-06-01T07:06:00", None),                 # too late: skipped, not caught up
])
def test_a_tick_counts_for_its_fire_time_within_the_catch_up_window(
    received: str, tick: str | None
) -> None:
    clock = FakeClock(int(utc(received).timestamp() * 1000))
    steps = eager_steps(clock)

    @steps.function(id="morning", trigger=TriggerCron("0 9 * * *", tz="Europe/Paris"))
    def morning(ctx: Context) -> None:
        return None

    event_id = fire_cron(steps.runtime, "morning", 0)

    assert event_id == (None if tick is None else f"cron:morning:{tick}")
    assert len(steps.list_runs(function_id="morning")) == (0 if tick is None else 1)


# -- removed functions -----------------------------------------------------------------------
def test_entries_of_removed_functions_leave_the_beat_schedule_on_finalize() -> None:
    # given a beat_schedule that still holds entries of a function that is gone
    app = new_app(beat_schedule={
        "celery_steps.cron.gone.0": {"task": "celery_steps.cron", "schedule": 60.0,
                                     "args": ("gone", 0)},
        "celery_steps.cron.report.1": {"task": "celery_steps.cron", "schedule": 60.0,
                                       "args": ("report", 1)},
        "cleanup": {"task": "app.cleanup", "schedule": 60.0},
    })
    steps = CelerySteps(app)
    declare(steps, "report", TriggerCron("0 9 * * *"))

    app.finalize()

    assert sorted(app.conf.beat_schedule) == ["celery_steps.cron.report.0", "cleanup"]


def test_beat_drops_the_entries_of_removed_functions_when_it_starts(tmp_path: Path) -> None:
    # given a beat schedule file written while a function "gone" had a cron trigger
    schedule_file = str(tmp_path / "beat-schedule")
    old = new_app()
    declare(CelerySteps(old), "gone", TriggerCron("0 9 * * *"))
    declare(CelerySteps.from_app(old), "report", TriggerCron("0 10 * * *"))
    first = PersistentScheduler(app=old, schedule_filename=schedule_file)
    assert "celery_steps.cron.gone.0" in first.schedule
    first.close()

    # when beat starts with the new code, where "gone" was removed
    app = new_app()
    declare(CelerySteps(app), "report", TriggerCron("0 10 * * *"))
    service = Service(app, schedule_filename=schedule_file)
    beat_init.send(sender=service)

    # then the scheduler no longer holds its entry; the others stay
    entries = dict(service.scheduler.schedule)
    service.scheduler.close()
    assert "celery_steps.cron.gone.0" not in entries
    assert isinstance(entries["celery_steps.cron.report.0"].schedule, ZonedCrontab)


def test_beat_init_drops_stale_entries_a_scheduler_kept_by_itself() -> None:
    # given a scheduler that kept a removed function's entry (as a store-backed one does)
    app = new_app()
    declare(CelerySteps(app), "report", TriggerCron("0 10 * * *"))
    service = Service(app, scheduler_cls="celery.beat:Scheduler")
    service.scheduler.update_from_dict({
        "celery_steps.cron.gone.0": {"task": "celery_steps.cron", "schedule": 60.0,
                                     "args": ("gone", 0)},
        "celery_steps.cron.report.3": {"task": "celery_steps.cron", "schedule": 60.0,
                                       "args": ("report", 3)},
        "cleanup": {"task": "app.cleanup", "schedule": 60.0},
    })

    # when beat starts
    beat_init.send(sender=service)

    # then only the entries the declared cron triggers need, and the app's own, are left
    assert sorted(service.scheduler.schedule) == ["celery_steps.cron.report.0", "cleanup"]
