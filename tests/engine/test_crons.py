"""Cron triggers: beat entries, one run per tick even with two beats, time zones."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from celery.schedules import crontab

from celery_steps import CelerySteps, ConfigurationError, Context, TriggerCron
from celery_steps.clock import FakeClock
from celery_steps.integration.beat import fire_cron
from celery_steps.testing import eager_steps


def at(iso: str) -> FakeClock:
    return FakeClock(int(datetime.fromisoformat(iso).timestamp() * 1000))


def test_each_cron_trigger_becomes_a_beat_entry_that_sends_the_tick_task() -> None:
    steps = eager_steps(at("2026-06-01T08:59:30+00:00"))

    @steps.function(id="report", trigger=TriggerCron("0 9 * * *", tz="Europe/Paris"))
    def report(ctx: Context) -> None:
        return None

    entry = steps.app.conf.beat_schedule["celery_steps.cron.report.0"]
    assert entry["task"] == "celery_steps.cron"
    assert entry["args"] == ("report", 0)
    assert isinstance(entry["schedule"], crontab)


def test_a_tick_starts_one_run_even_when_two_beats_send_it() -> None:
    clock = at("2026-06-01T07:00:20+00:00")  # 09:00:20 in Paris (summer time)
    steps = eager_steps(clock)

    @steps.function(id="morning", trigger=TriggerCron("TZ=Europe/Paris 0 9 * * *"))
    def morning(ctx: Context) -> str:
        return str(ctx.event.data["tick"])

    first = fire_cron(steps.runtime, "morning", 0)
    second = fire_cron(steps.runtime, "morning", 0)  # the other beat process
    runs = steps.list_runs(function_id="morning")

    assert first == second == "cron:morning:2026-06-01T09:00"
    assert [r.output for r in runs] == ["2026-06-01T09:00"]


def test_a_tick_outside_the_fire_minute_starts_nothing(steps: CelerySteps) -> None:
    @steps.function(id="hourly", trigger=TriggerCron("0 * * * *"))
    def hourly(ctx: Context) -> None:
        return None

    steps.clock.advance(timedelta(minutes=30))  # type: ignore[attr-defined]
    now = steps.clock.now()
    if now.minute in (0, 1, 2):
        steps.clock.advance(timedelta(minutes=10))  # type: ignore[attr-defined]

    assert fire_cron(steps.runtime, "hourly", 0) is None
    assert steps.list_runs(function_id="hourly") == []


def test_a_cron_fires_once_on_the_night_clocks_go_back() -> None:
    # 02:30 happens twice in Paris on 2026-10-25: at 00:30 UTC and at 01:30 UTC
    clock = at("2026-10-25T00:30:05+00:00")
    steps = eager_steps(clock)

    @steps.function(id="nightly", trigger=TriggerCron("30 2 * * *", tz="Europe/Paris"))
    def nightly(ctx: Context) -> None:
        return None

    fire_cron(steps.runtime, "nightly", 0)
    clock.advance(timedelta(hours=1))
    fire_cron(steps.runtime, "nightly", 0)

    assert len(steps.list_runs(function_id="nightly")) == 1


@pytest.mark.parametrize(
    ("trigger", "problem"),
    [
        (TriggerCron("0 0 31 2 *"), "never"),
        (TriggerCron("0 9 * * *", tz="Mars/Olympus"), "Mars/Olympus"),
        (TriggerCron("every day"), "cron"),
    ],
)
def test_bad_crons_are_configuration_errors_naming_the_function(
    steps: CelerySteps, trigger: TriggerCron, problem: str
) -> None:
    with pytest.raises(ConfigurationError, match="bad-cron") as info:
        @steps.function(id="bad-cron", trigger=trigger)
        def bad_cron(ctx: Context) -> None:
            return None

    assert problem.lower() in str(info.value).lower()
    assert "bad-cron" not in steps.functions
