from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from celery_steps.crons import CronSchedule, parse_cron
from celery_steps.errors import ConfigurationError

UTC = timezone.utc
PARIS = ZoneInfo("Europe/Paris")


def _fires(schedule: CronSchedule, start: datetime, end: datetime) -> list[datetime]:
    fires = []
    fire = schedule.next_after(start)
    while fire < end:
        fires.append(fire)
        fire = schedule.next_after(fire)
    return fires


def test_plain_cron_defaults_to_utc() -> None:
    schedule = parse_cron("0 9 * * *", function_id="daily")
    assert schedule == CronSchedule(expression="0 9 * * *", tz_name="UTC")
    assert schedule.tz == ZoneInfo("UTC")


@pytest.mark.parametrize("prefix", ["TZ", "CRON_TZ"])
def test_tz_prefix_sets_the_zone(prefix: str) -> None:
    schedule = parse_cron(f"{prefix}=Europe/Paris 0 9 * * *", function_id="f")
    assert schedule == CronSchedule(expression="0 9 * * *", tz_name="Europe/Paris")


def test_tz_argument_sets_the_zone() -> None:
    schedule = parse_cron("0 9 * * *", "America/New_York", function_id="f")
    assert schedule.tz_name == "America/New_York"


def test_same_zone_in_prefix_and_argument_is_accepted() -> None:
    schedule = parse_cron("TZ=Europe/Paris 0 9 * * *", "Europe/Paris", function_id="f")
    assert schedule.tz_name == "Europe/Paris"


def test_different_zones_in_prefix_and_argument_are_rejected() -> None:
    with pytest.raises(ConfigurationError, match=r"'f'.*keep only one"):
        parse_cron("TZ=Europe/Paris 0 9 * * *", "UTC", function_id="f")


def test_extra_whitespace_is_normalised() -> None:
    schedule = parse_cron("  TZ=Europe/Paris   0  9 *\t* *  ", function_id="f")
    assert schedule.expression == "0 9 * * *"


def test_macros_are_expanded_to_five_fields() -> None:
    assert parse_cron("@daily", function_id="f").expression == "0 0 * * *"
    assert parse_cron("TZ=Europe/Paris @hourly", function_id="f").expression == "0 * * * *"


def test_names_ranges_and_steps_are_accepted() -> None:
    schedule = parse_cron("*/15 9-17 * JAN-MAR MON-FRI", function_id="f")
    assert schedule.expression == "*/15 9-17 * JAN-MAR MON-FRI"


@pytest.mark.parametrize("tz", ["Mars/Olympus", "Europe/Pariss", "../etc/passwd", "not a zone"])
def test_unknown_time_zone_is_rejected_naming_function_and_zone(tz: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_cron("0 9 * * *", tz, function_id="report")
    assert "'report'" in str(info.value)
    assert repr(tz) in str(info.value)


def test_unknown_time_zone_in_prefix_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match=r"'report'.*unknown time zone 'Nowhere/Town'"):
        parse_cron("TZ=Nowhere/Town 0 9 * * *", function_id="report")


@pytest.mark.parametrize("tz", ["", "  "])
def test_empty_tz_is_rejected(tz: str) -> None:
    with pytest.raises(ConfigurationError, match=r"'f'.*IANA"):
        parse_cron("0 9 * * *", tz, function_id="f")


def test_empty_tz_prefix_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="empty TZ= prefix"):
        parse_cron("TZ= 0 9 * * *", function_id="f")


@pytest.mark.parametrize(
    "cron",
    [
        "",
        "0 9 * *",
        "0 9 * * * *",
        "0 0 9 * * * 2026",
        "61 9 * * *",
        "0 25 * * *",
        "a b c d e",
        "*/0 * * * *",
        "0 9 * * 8",
        "@reboot",
        "TZ=Europe/Paris",
    ],
)
def test_invalid_cron_is_rejected_naming_the_function(cron: str) -> None:
    with pytest.raises(ConfigurationError, match="function 'nightly': invalid cron"):
        parse_cron(cron, function_id="nightly")


@pytest.mark.parametrize("cron", ["R 9 * * *", "0 H * * *", "H(0-29) 9 * * *", "0 9 * * r"])
def test_random_and_hashed_fields_are_rejected(cron: str) -> None:
    with pytest.raises(ConfigurationError, match="random"):
        parse_cron(cron, function_id="f")


@pytest.mark.parametrize("cron", ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4 *", "0 0 31 11 *"])
def test_cron_that_never_fires_is_rejected(cron: str) -> None:
    with pytest.raises(ConfigurationError, match=r"function 'f'.*never fires"):
        parse_cron(cron, function_id="f")


def test_leap_day_cron_is_accepted() -> None:
    schedule = parse_cron("0 0 29 2 *", function_id="f")
    assert schedule.next_after(datetime(2026, 1, 1, tzinfo=UTC)) == datetime(
        2028, 2, 29, tzinfo=UTC
    )


def test_non_string_cron_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match=r"'f'.*must be a string"):
        parse_cron(None, function_id="f")  # type: ignore[arg-type]


def test_next_after_is_strictly_after_and_in_utc() -> None:
    schedule = parse_cron("0 9 * * *", "Europe/Paris", function_id="f")
    at_fire = datetime(2026, 7, 1, 7, 0, tzinfo=UTC)  # 09:00 in Paris (CEST)
    assert schedule.next_after(at_fire - timedelta(seconds=1)) == at_fire
    nxt = schedule.next_after(at_fire)
    assert nxt == datetime(2026, 7, 2, 7, 0, tzinfo=UTC)
    assert nxt.tzinfo is UTC


def test_next_after_accepts_any_aware_zone() -> None:
    schedule = parse_cron("0 9 * * *", function_id="f")
    after = datetime(2026, 7, 1, 10, 30, tzinfo=PARIS)  # 08:30 UTC
    assert schedule.next_after(after) == datetime(2026, 7, 1, 9, 0, tzinfo=UTC)


def test_naive_datetimes_are_rejected() -> None:
    schedule = parse_cron("0 9 * * *", function_id="f")
    with pytest.raises(ConfigurationError, match="aware"):
        schedule.next_after(datetime(2026, 7, 1))
    with pytest.raises(ConfigurationError, match="aware"):
        schedule.latest_at_or_before(datetime(2026, 7, 1))
    with pytest.raises(ConfigurationError, match="aware"):
        schedule.tick_id(datetime(2026, 7, 1))


def test_latest_at_or_before_includes_the_instant_itself() -> None:
    schedule = parse_cron("0 9 * * *", "Europe/Paris", function_id="f")
    fire = datetime(2026, 7, 1, 7, 0, tzinfo=UTC)
    assert schedule.latest_at_or_before(fire) == fire
    assert schedule.latest_at_or_before(fire + timedelta(hours=5)) == fire
    assert schedule.latest_at_or_before(fire - timedelta(microseconds=1)) == fire - timedelta(
        days=1
    )


def test_latest_at_or_before_is_none_when_nothing_fired_recently() -> None:
    schedule = CronSchedule(expression="0 0 31 2 *", tz_name="UTC")
    assert schedule.latest_at_or_before(datetime(2026, 7, 1, tzinfo=UTC)) is None


def test_tick_id_is_the_local_wall_clock_minute() -> None:
    schedule = parse_cron("0 9 * * *", "Europe/Paris", function_id="f")
    assert schedule.tick_id(datetime(2026, 7, 1, 7, 0, tzinfo=UTC)) == "2026-07-01T09:00"


def test_daily_cron_fires_once_on_the_spring_forward_day() -> None:
    # given 02:30 daily in Paris; on 2026-03-29 clocks jump from 02:00 to 03:00
    schedule = parse_cron("30 2 * * *", "Europe/Paris", function_id="f")
    fires = _fires(
        schedule, datetime(2026, 3, 27, tzinfo=PARIS), datetime(2026, 4, 1, tzinfo=PARIS)
    )
    ticks = [schedule.tick_id(fire) for fire in fires]
    # then one fire per local day; croniter moves the skipped 02:30 to 03:00 local
    assert ticks == [
        "2026-03-27T02:30",
        "2026-03-28T02:30",
        "2026-03-29T03:00",
        "2026-03-30T02:30",
        "2026-03-31T02:30",
    ]
    assert fires[2] == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


def test_hourly_minute_in_the_spring_gap_is_skipped() -> None:
    schedule = parse_cron("30 * * * *", "Europe/Paris", function_id="f")
    fires = _fires(
        schedule,
        datetime(2026, 3, 29, 1, 0, tzinfo=PARIS),
        datetime(2026, 3, 29, 4, 0, tzinfo=PARIS),
    )
    assert [schedule.tick_id(fire) for fire in fires] == ["2026-03-29T01:30", "2026-03-29T03:30"]


def test_daily_cron_fires_once_on_the_fall_back_day() -> None:
    # given 02:30 daily in Paris; on 2026-10-25 the hour 02:00-03:00 happens twice
    schedule = parse_cron("30 2 * * *", "Europe/Paris", function_id="f")
    fires = _fires(
        schedule, datetime(2026, 10, 23, tzinfo=PARIS), datetime(2026, 10, 28, tzinfo=PARIS)
    )
    ticks = [schedule.tick_id(fire) for fire in fires]
    # then exactly one fire per local day, the first 02:30 (CEST) on the repeated day
    assert ticks == [
        "2026-10-23T02:30",
        "2026-10-24T02:30",
        "2026-10-25T02:30",
        "2026-10-26T02:30",
        "2026-10-27T02:30",
    ]
    assert datetime(2026, 10, 25, 0, 30, tzinfo=UTC) in fires
    assert datetime(2026, 10, 25, 1, 30, tzinfo=UTC) not in fires


def test_both_occurrences_of_a_repeated_minute_share_a_tick_id() -> None:
    schedule = parse_cron("30 2 * * *", "Europe/Paris", function_id="f")
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    second = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert schedule.tick_id(first) == schedule.tick_id(second) == "2026-10-25T02:30"


def test_every_minute_cron_skips_the_whole_repeated_hour() -> None:
    schedule = parse_cron("* * * * *", "Europe/Paris", function_id="f")
    fires = _fires(
        schedule,
        datetime(2026, 10, 24, 23, 55, tzinfo=UTC),
        datetime(2026, 10, 25, 2, 5, tzinfo=UTC),
    )
    ticks = [schedule.tick_id(fire) for fire in fires]
    assert len(ticks) == len(set(ticks))
    # 01:56..02:59 CEST, then the repeated hour is skipped, then 03:00..03:04 CET
    assert fires[-5] == datetime(2026, 10, 25, 2, 0, tzinfo=UTC)
    assert len(fires) == 5 + 60 + 5 - 1


def test_latest_at_or_before_agrees_with_next_after_across_dst() -> None:
    schedule = parse_cron("30 2 * * *", "Europe/Paris", function_id="f")
    for start in (datetime(2026, 3, 28, 20, tzinfo=UTC), datetime(2026, 10, 24, 20, tzinfo=UTC)):
        for step in range(0, 12 * 60, 10):
            at = start + timedelta(minutes=step)
            latest = schedule.latest_at_or_before(at)
            assert latest is not None
            assert latest <= at < schedule.next_after(latest)
            assert schedule.next_after(at) > at


def test_latest_at_or_before_skips_the_repeated_occurrence() -> None:
    schedule = parse_cron("30 2 * * *", "Europe/Paris", function_id="f")
    at = datetime(2026, 10, 25, 1, 45, tzinfo=UTC)  # 02:45 CET, after both 02:30s
    assert schedule.latest_at_or_before(at) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_two_schedules_compute_the_same_ticks() -> None:
    # two beat processes parse the same trigger independently
    one = parse_cron("TZ=Europe/Paris */20 * * * *", function_id="f")
    two = parse_cron("*/20 * * * *", "Europe/Paris", function_id="f")
    start = datetime(2026, 10, 25, tzinfo=UTC)
    end = start + timedelta(hours=4)
    assert [one.tick_id(f) for f in _fires(one, start, end)] == [
        two.tick_id(f) for f in _fires(two, start, end)
    ]
