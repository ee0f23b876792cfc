"""Durations (``"1h30m"``, ``"PT1H30M"``, seconds, ``timedelta``) and points in time (aware
datetimes)."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from typing import Final

from pydantic import TypeAdapter, ValidationError

from celery_steps.errors import ConfigurationError

__all__ = ["MAX_DURATION", "parse_duration", "parse_when", "to_ms"]

MAX_DURATION: Final = timedelta(days=366 * 5)

_UNITS: Final = {
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
    "s": timedelta(seconds=1),
    "ms": timedelta(milliseconds=1),
}
_NUMBER = r"\d+(?:\.\d+)?"
# Units largest first, each at most once; ``m`` must not swallow the ``m`` of ``ms``.
_DURATION = re.compile(
    rf"(?:(?P<w>{_NUMBER})w\s*)?"
    rf"(?:(?P<d>{_NUMBER})d\s*)?"
    rf"(?:(?P<h>{_NUMBER})h\s*)?"
    rf"(?:(?P<m>{_NUMBER})m(?!s)\s*)?"
    rf"(?:(?P<s>{_NUMBER})s\s*)?"
    rf"(?:(?P<ms>{_NUMBER})ms\s*)?"
)
_BARE_NUMBER = re.compile(_NUMBER)
_ISO_8601: Final = TypeAdapter(timedelta)  # pydantic parses ISO-8601 durations
_FORMS: Final = (
    "a timedelta, a number of seconds (e.g. 30 or 1.5), a string of amounts with units "
    "w, d, h, m, s, ms from largest to smallest, e.g. '500ms', '30s', '5m', '2h', '7d', '1w', "
    "'1h30m', or an ISO-8601 duration in weeks, days, hours, minutes and seconds, e.g. "
    "'PT1H30M', 'P1D', 'P2W'"
)


def _bad(what: str, value: object, reason: str) -> ConfigurationError:
    return ConfigurationError(f"invalid {what} {value!r}: {reason}; use {_FORMS}")


def _too_long(what: str, value: object) -> ConfigurationError:
    return ConfigurationError(
        f"invalid {what} {value!r}: longer than the maximum of {MAX_DURATION.days} days; "
        "use a shorter duration"
    )


def _check_range(delta: timedelta, what: str, value: object) -> timedelta:
    if delta < timedelta(0):
        raise _bad(what, value, "it is negative")
    if delta > MAX_DURATION:
        raise _too_long(what, value)
    return delta


def parse_duration(value: float | int | str | timedelta, *, what: str = "duration") -> timedelta:
    """A non-negative ``timedelta`` of at most :data:`MAX_DURATION`.

    Accepts a ``timedelta``; an int or float number of seconds (finite, not a bool); or a
    string such as ``"500ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"7d"``, ``"1w"``,
    ``"1h30m"``, ``"1d2h3m4s500ms"`` (units largest first, each at most once, decimals
    allowed), a bare number of seconds ``"30"``, or an ISO-8601 duration such as
    ``"PT1H30M"``, ``"P1D"``, ``"P2W"`` (parsed by pydantic; years and months are refused, as
    they have no fixed length). Surrounding whitespace is ignored.
    """
    if isinstance(value, timedelta):
        return _check_range(value, what, value)
    if isinstance(value, bool):
        raise _bad(what, value, "a bool is not a duration")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise _bad(what, value, "it is not a finite number")
        if value < 0:
            raise _bad(what, value, "it is negative")
        if value > MAX_DURATION.total_seconds():
            raise _too_long(what, value)
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise _bad(what, value, f"a {type(value).__name__} is not a duration")
    text = value.strip()
    if not text:
        raise _bad(what, value, "it is empty")
    if text.startswith("-"):
        raise _bad(what, value, "it is negative")
    if text.startswith("P"):
        return _parse_iso_8601(text, what, value)
    if _BARE_NUMBER.fullmatch(text):
        seconds = float(text)
        if seconds > MAX_DURATION.total_seconds():
            raise _too_long(what, value)
        return timedelta(seconds=seconds)
    found = _DURATION.fullmatch(text)
    if found is None or not any(found.groupdict().values()):
        raise _bad(what, value, "it is not a duration")
    total = timedelta(0)
    for unit, amount in found.groupdict().items():
        if amount is None:
            continue
        part = float(amount) * _UNITS[unit].total_seconds()
        if total.total_seconds() + part > MAX_DURATION.total_seconds():
            raise _too_long(what, value)
        total += timedelta(seconds=part)
    return _check_range(total, what, value)


def _parse_iso_8601(text: str, what: str, value: str) -> timedelta:
    if any(unit in text.partition("T")[0] for unit in "YM"):
        raise _bad(what, value, "years and months have no fixed length; use days or weeks, "
                                "e.g. 'P30D'")
    try:
        delta = _ISO_8601.validate_python(text)
    except ValidationError as exc:
        reason = exc.errors()[0].get("ctx", {}).get("error") or "malformed"
        raise _bad(what, value, f"it is not an ISO-8601 duration ({reason})") from None
    return _check_range(delta, what, value)


def parse_when(value: datetime | str, *, what: str = "time") -> datetime:
    """An aware ``datetime`` or ISO-8601 string (``Z`` allowed), converted to UTC.

    Naive values are rejected: their time zone would be a guess.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ConfigurationError(
                f"invalid {what} {value!r}: not an ISO-8601 date and time; use e.g. "
                "'2026-03-29T09:00:00+00:00' or '2026-03-29T09:00:00Z'"
            ) from None
    else:
        raise ConfigurationError(
            f"invalid {what} {value!r}: expected an aware datetime or an ISO-8601 string, "
            f"got {type(value).__name__}"
        )
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ConfigurationError(
            f"invalid {what} {value!r}: it is naive (has no time zone); add one, e.g. "
            "datetime.now(timezone.utc) or a '+00:00' (or 'Z') suffix on the string"
        )
    return moment.astimezone(timezone.utc)


def to_ms(delta: timedelta) -> int:
    """Whole milliseconds in ``delta`` (rounded down)."""
    return delta // timedelta(milliseconds=1)
