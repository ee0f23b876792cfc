from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from celery_steps.durations import MAX_DURATION, parse_duration, parse_when, to_ms
from celery_steps.errors import ConfigurationError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s500ms", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=500)),
        ("1m500ms", timedelta(minutes=1, milliseconds=500)),
        ("1.5h", timedelta(minutes=90)),
        ("30", timedelta(seconds=30)),
        ("2.5", timedelta(seconds=2.5)),
        ("  5m  ", timedelta(minutes=5)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        ("0s", timedelta(0)),
    ],
)
def test_duration_strings_are_parsed(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("P1D", timedelta(days=1)),
        ("P2W", timedelta(weeks=2)),
        ("PT30S", timedelta(seconds=30)),
        ("PT0.5S", timedelta(milliseconds=500)),
        ("P1DT2H3M4S", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("PT36H", timedelta(hours=36)),
        ("P1.5D", timedelta(hours=36)),
        ("  PT5M  ", timedelta(minutes=5)),
        ("PT0S", timedelta(0)),
        ("P0D", timedelta(0)),
        (f"P{MAX_DURATION.days}D", MAX_DURATION),
    ],
)
def test_iso_8601_durations_are_parsed(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["P", "PT", "P1H", "PT1S1", "pt1h", "PT-1H", "+PT1H", "P99999999999D"])
def test_malformed_iso_8601_durations_are_rejected(text: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_duration(text, what="sleep duration")
    message = str(info.value)
    assert message.startswith(f"invalid sleep duration {text!r}")
    assert "ISO-8601" in message and "'PT1H30M'" in message


@pytest.mark.parametrize("text", ["P1Y", "P2M", "P1Y2M3DT4H"])
def test_iso_8601_years_and_months_are_rejected_as_having_no_fixed_length(text: str) -> None:
    with pytest.raises(ConfigurationError, match="no fixed length"):
        parse_duration(text)


def test_numbers_are_seconds() -> None:
    assert parse_duration(30) == timedelta(seconds=30)
    assert parse_duration(0.25) == timedelta(milliseconds=250)
    assert parse_duration(0) == timedelta(0)


def test_timedelta_is_returned_unchanged() -> None:
    assert parse_duration(timedelta(hours=3)) == timedelta(hours=3)


def test_max_duration_is_accepted() -> None:
    assert parse_duration(MAX_DURATION) == MAX_DURATION
    assert parse_duration(f"{MAX_DURATION.days}d") == MAX_DURATION


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "5x",
        "m5",
        "5mm",
        "5m5m",
        "30m1h",
        "1 h",
        "h",
        "5M",
        "1e3",
        "abc",
        "5m!",
        ".5s",
        "ms",
        "5s s",
    ],
)
def test_garbage_duration_strings_are_rejected(value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_duration(value, what="sleep duration")
    message = str(info.value)
    assert message.startswith(f"invalid sleep duration {value!r}")
    assert "'500ms'" in message and "'1h30m'" in message


@pytest.mark.parametrize("value", [-1, -0.5, "-5s", "-30", timedelta(seconds=-1), "-PT1H", "-P1D"])
def test_negative_durations_are_rejected(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="negative"):
        parse_duration(value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_are_rejected(value: float) -> None:
    with pytest.raises(ConfigurationError, match="finite"):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, False])
def test_bools_are_rejected(value: bool) -> None:
    with pytest.raises(ConfigurationError, match="bool"):
        parse_duration(value)


@pytest.mark.parametrize("value", [None, [5], b"5s", {"s": 5}])
def test_other_types_are_rejected(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="is not a duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    "value",
    [
        MAX_DURATION + timedelta(seconds=1),
        MAX_DURATION.total_seconds() + 1,
        10**30,
        1e300,
        "99999999999w",
        "1831d",
        str(10**30),
        "262w1d",
        f"P{MAX_DURATION.days + 1}D",
        "P300W",
    ],
)
def test_durations_longer_than_the_maximum_are_rejected(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="longer than the maximum"):
        parse_duration(value)


def test_aware_datetime_is_converted_to_utc() -> None:
    paris = datetime(2026, 7, 1, 12, 0, tzinfo=ZoneInfo("Europe/Paris"))
    result = parse_when(paris)
    assert result == datetime(2026, 7, 1, 10, 0, tzinfo=timezone.utc)
    assert result.tzinfo is timezone.utc


@pytest.mark.parametrize(
    "text",
    [
        "2026-07-01T10:00:00Z",
        "2026-07-01T10:00:00+00:00",
        "2026-07-01T12:00:00+02:00",
        " 2026-07-01T10:00:00z ",
    ],
)
def test_iso_strings_with_a_zone_are_parsed(text: str) -> None:
    assert parse_when(text) == datetime(2026, 7, 1, 10, 0, tzinfo=timezone.utc)


def test_naive_datetime_is_rejected_with_a_hint() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_when(datetime(2026, 7, 1, 10, 0), what="sleep_until time")
    message = str(info.value)
    assert "naive" in message
    assert "datetime.now(timezone.utc)" in message
    assert message.startswith("invalid sleep_until time")


def test_naive_string_is_rejected_with_a_hint() -> None:
    with pytest.raises(ConfigurationError, match=r"naive.*\+00:00"):
        parse_when("2026-07-01T10:00:00")


@pytest.mark.parametrize("text", ["", "tomorrow", "2026-13-01T00:00:00Z", "Z"])
def test_unparseable_time_strings_are_rejected(text: str) -> None:
    with pytest.raises(ConfigurationError, match="ISO-8601"):
        parse_when(text)


@pytest.mark.parametrize("value", [None, 1700000000, timedelta(seconds=1)])
def test_non_time_values_are_rejected(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="expected an aware datetime"):
        parse_when(value)


def test_to_ms_counts_whole_milliseconds() -> None:
    assert to_ms(timedelta(seconds=1.5)) == 1500
    assert to_ms(timedelta(microseconds=1999)) == 1
    assert to_ms(timedelta(days=1)) == 86_400_000
    assert isinstance(to_ms(timedelta(0)), int)
