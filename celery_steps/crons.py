"""Cron triggers: parsing, time zones and fire times (computed with ``croniter``).

Daylight saving time, for a schedule in a zone that observes it:

* Fall back (a local hour repeats): a wall-clock time in the repeated hour fires ONCE, at its
  first occurrence. :meth:`CronSchedule.next_after` skips the second occurrence, and
  :meth:`CronSchedule.tick_id` (the local wall-clock minute) is the same for both, so a tick
  is deduplicated even if someone computed the second one.
* Spring forward (a local hour is skipped): this is croniter's behaviour, kept as it is. When
  the hour field names the skipped hour (``"30 2 * * *"`` in Europe/Paris), the day's fire
  moves to the first instant after the gap (03:00 local, tick id ``...T03:00``), so a daily
  job still fires once that day. When the hour field is a wildcard or a step
  (``"30 * * * *"``), the non-existent 02:30 is simply skipped (01:30, then 03:30).

Celery beat's ``crontab`` fires at the same local times (the beat entries are real crontabs
in the schedule's zone, built from :meth:`CronSchedule.crontab_fields`), so only what both
can express is accepted: croniter's extensions (``L``, ``W``, ``#``, random fields) are
refused, and so is a cron restricting both the day of the month and the day of the week
(cron fires when *either* matches, Celery's crontab only when *both* do).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from itertools import pairwise
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from celery_steps.errors import ConfigurationError

__all__ = ["MAX_YEARS_BETWEEN_FIRES", "CronFields", "CronSchedule", "parse_cron"]

MAX_YEARS_BETWEEN_FIRES: Final = 10
"""A cron that does not fire within this many years is treated as never firing."""

_MACROS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# croniter's random "R" and hashed "H" fields (names like THU or MAR are fine).
_RANDOM_FIELD: Final = re.compile(r"(?<![A-Za-z])[RH](?![A-Za-z])", re.IGNORECASE)
# croniter's extensions Celery's crontab cannot express: last (L), weekday (W), nth (#).
_EXTENSION: Final = re.compile(r"[LW#]", re.IGNORECASE)
_NAME: Final = re.compile(r"[A-Za-z]{3}")  # JAN..DEC, SUN..SAT (JUL and WED hold L and W)
# The bounds of each field, in expression order: minute hour day-of-month month day-of-week.
_BOUNDS: Final = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_TZ_PREFIXES: Final = ("CRON_TZ=", "TZ=")
_TICK_FORMAT: Final = "%Y-%m-%dT%H:%M"
_EPSILON: Final = timedelta(microseconds=1)
# Repeated wall-clock fires skipped in a row: at most one per minute of a repeated period.
_MAX_SKIPS: Final = 24 * 60


def _require_aware(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(
            f"{name} must be an aware datetime, got {value!r}; add a time zone, "
            "e.g. datetime.now(timezone.utc)"
        )
    return value


@dataclass(frozen=True)
class CronFields:
    """A cron's fields as Celery's ``crontab`` takes them: numbers, ranges, steps and lists."""

    minute: str
    hour: str
    day_of_month: str
    month_of_year: str
    day_of_week: str


def _compact(values: list[int], low: int, high: int) -> str:
    """The shortest usual spelling of a set of field values: ``*/15``, ``9-17``, ``1,15``."""
    if len(values) == high - low + 1:
        return "*"
    if len(values) >= 3:
        step = values[1] - values[0]
        if step > 1 and all(b - a == step for a, b in pairwise(values)):
            if values[0] == low and values[-1] + step > high:
                return f"*/{step}"
            return f"{values[0]}-{values[-1]}/{step}"
    parts: list[str] = []
    start = prev = values[0]
    for value in [*values[1:], None]:
        if value is not None and value == prev + 1:
            prev = value
            continue
        parts.append(str(start) if start == prev else
                     f"{start},{prev}" if prev == start + 1 else f"{start}-{prev}")
        if value is not None:
            start = prev = value
    return ",".join(parts)


@dataclass(frozen=True)
class CronSchedule:
    """A 5-field cron ``expression`` firing in the IANA time zone ``tz_name``."""

    expression: str
    tz_name: str

    @property
    def tz(self) -> ZoneInfo:
        """The schedule's time zone."""
        return ZoneInfo(self.tz_name)

    def crontab_fields(self) -> CronFields:
        """The expression's fields in the form Celery's ``crontab`` reads them the same way
        (names become numbers, Sunday is 0, expanded sets are written compactly)."""
        expanded = croniter(self.expression).expanded
        fields = [
            "*" if values == ["*"] else _compact(sorted({int(v) for v in values}), low, high)
            for values, (low, high) in zip(expanded, _BOUNDS, strict=True)
        ]
        return CronFields(*fields)

    def _iter(self, start: datetime) -> croniter:
        return croniter(
            self.expression,
            start.astimezone(self.tz),
            max_years_between_matches=MAX_YEARS_BETWEEN_FIRES,
        )

    def _is_repeat(self, fire_time: datetime) -> bool:
        """Whether ``fire_time`` is the second occurrence of a repeated (fall-back) wall time."""
        local = fire_time.astimezone(self.tz)
        return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()

    def next_after(self, after: datetime) -> datetime:
        """The next fire time strictly after ``after`` (aware), in UTC.

        Raises ConfigurationError if there is none within ``MAX_YEARS_BETWEEN_FIRES`` years
        (which :func:`parse_cron` has already ruled out).
        """
        cursor = _require_aware(after, "after")
        for _ in range(_MAX_SKIPS):
            try:
                fire: datetime = self._iter(cursor).get_next(datetime)
            except (ValueError, OverflowError) as exc:  # CroniterBadDateError is a ValueError
                raise ConfigurationError(
                    f"cron {self.expression!r} ({self.tz_name}) has no fire time within "
                    f"{MAX_YEARS_BETWEEN_FIRES} years after {after.isoformat()}: {exc}"
                ) from exc
            fire = fire.astimezone(timezone.utc)
            if not self._is_repeat(fire):
                return fire
            cursor = fire
        raise ConfigurationError(  # pragma: no cover
            f"cron {self.expression!r} ({self.tz_name}): could not step past a repeated hour"
        )

    def latest_at_or_before(self, at: datetime) -> datetime | None:
        """The latest fire time at or before ``at`` (aware), in UTC; None if none in ~10 years."""
        cursor = _require_aware(at, "at") + _EPSILON
        for _ in range(_MAX_SKIPS):
            try:
                fire: datetime = self._iter(cursor).get_prev(datetime)
            except (ValueError, OverflowError):
                return None
            fire = fire.astimezone(timezone.utc)
            if not self._is_repeat(fire):
                return fire
            cursor = fire
        return None  # pragma: no cover

    def tick_id(self, fire_time: datetime) -> str:
        """The local wall-clock minute of ``fire_time`` in the schedule's zone.

        Both occurrences of a repeated (fall-back) minute give the same id, and every beat
        process computes the same id for the same fire, so it deduplicates ticks.
        """
        local = _require_aware(fire_time, "fire_time").astimezone(self.tz)
        return local.strftime(_TICK_FORMAT)


def _split_tz(cron: str, function_id: str) -> tuple[str | None, str]:
    text = cron.strip()
    for prefix in _TZ_PREFIXES:
        if text.upper().startswith(prefix):
            after = text[len(prefix) :]
            if not after or after[0].isspace():
                raise ConfigurationError(
                    f"function {function_id!r}: cron {cron!r} has an empty {prefix} prefix; "
                    f"write e.g. '{prefix}Europe/Paris 0 9 * * *'"
                )
            name, *rest = after.split(None, 1)
            return name, rest[0] if rest else ""
    return None, text


def _zone(tz_name: str, function_id: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ConfigurationError(
            f"function {function_id!r}: unknown time zone {tz_name!r}; use an IANA name "
            "such as 'UTC', 'Europe/Paris' or 'America/New_York'"
        ) from None


def parse_cron(cron: str, tz: str | None = None, *, function_id: str) -> CronSchedule:
    """Parse a cron trigger: ``"0 9 * * *"``, optionally prefixed ``"TZ=Europe/Paris "``.

    ``CRON_TZ=`` works like ``TZ=``; ``@hourly``, ``@daily``, ``@weekly``, ``@monthly`` and
    ``@yearly`` are expanded to 5 fields. The time zone defaults to UTC. A cron that does
    not fire within ``MAX_YEARS_BETWEEN_FIRES`` years (``"0 0 31 2 *"``) is rejected.
    """
    if not isinstance(cron, str):
        raise ConfigurationError(
            f"function {function_id!r}: cron must be a string such as '0 9 * * *', "
            f"got {type(cron).__name__}"
        )
    if tz is not None and (not isinstance(tz, str) or not tz.strip()):
        raise ConfigurationError(
            f"function {function_id!r}: tz must be an IANA time zone name such as "
            f"'Europe/Paris', got {tz!r}"
        )
    prefix_tz, body = _split_tz(cron, function_id)
    if prefix_tz is not None and tz is not None and prefix_tz != tz.strip():
        raise ConfigurationError(
            f"function {function_id!r}: cron {cron!r} sets the time zone {prefix_tz!r} but "
            f"tz={tz!r} was also given; keep only one of them"
        )
    tz_name = prefix_tz or (tz.strip() if tz is not None else "UTC")
    zone = _zone(tz_name, function_id)
    expression = _MACROS.get(body.lower(), body)
    fields = expression.split()
    if len(fields) != 5:
        raise ConfigurationError(
            f"function {function_id!r}: invalid cron {cron!r}: expected exactly 5 fields "
            f"(minute hour day-of-month month day-of-week), got {len(fields)}; "
            "e.g. '0 9 * * *' for 09:00 every day"
        )
    expression = " ".join(fields)
    if _RANDOM_FIELD.search(expression):
        raise ConfigurationError(
            f"function {function_id!r}: invalid cron {cron!r}: random ('R') and hashed ('H') "
            "fields are not supported, as every beat process must compute the same fire "
            "times; write explicit values, e.g. '17 9 * * *'"
        )
    if any(_EXTENSION.search(_NAME.sub("", field)) for field in fields):
        raise ConfigurationError(
            f"function {function_id!r}: cron {cron!r} uses L, W or #, which Celery beat's "
            "crontab cannot express; list the days instead (e.g. '0 9 28-31 * *' and a check "
            "in the handler for the last day of the month)"
        )
    try:
        expanded = croniter(expression, datetime.now(zone)).expanded
    except (ValueError, KeyError, TypeError) as exc:  # CroniterBadCronError is a ValueError
        raise ConfigurationError(
            f"function {function_id!r}: invalid cron {cron!r}: {exc}; "
            "use 5 fields (minute hour day-of-month month day-of-week), e.g. '0 9 * * *'"
        ) from exc
    if expanded[2] != ["*"] and expanded[4] != ["*"]:
        raise ConfigurationError(
            f"function {function_id!r}: cron {cron!r} restricts both the day of the month "
            "and the day of the week: cron fires when either matches, Celery's crontab only "
            "when both do. Declare two triggers instead, e.g. TriggerCron('0 9 1 * *') and "
            "TriggerCron('0 9 * * MON'): a minute both match starts one run"
        )
    schedule = CronSchedule(expression=expression, tz_name=tz_name)
    try:
        schedule.next_after(datetime.now(timezone.utc))
    except ConfigurationError:
        raise ConfigurationError(
            f"function {function_id!r}: cron {cron!r} never fires (no date matches within "
            f"{MAX_YEARS_BETWEEN_FIRES} years, e.g. February 30th); fix the day and month"
        ) from None
    return schedule
