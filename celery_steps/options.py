"""Small option objects for triggers and flow control.

Plain frozen dataclasses: cheap to build, easy to compare, validated by
:mod:`celery_steps.functions` when a function is declared.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

Duration = float | int | str | timedelta


@dataclass(frozen=True)
class TriggerEvent:
    """Start a run when an event named ``event`` (or matching ``prefix/*``) arrives."""

    event: str
    if_exp: str | None = None


@dataclass(frozen=True)
class TriggerCron:
    """Start a run on a cron schedule, in time zone ``tz`` (default UTC)."""

    cron: str
    tz: str | None = None


Trigger = str | TriggerEvent | TriggerCron


@dataclass(frozen=True)
class CancelOn:
    """Cancel a run when a matching event arrives (within ``timeout`` of the run's start)."""

    event: str
    if_exp: str | None = None
    match: str | None = None
    timeout: Duration | None = None


@dataclass(frozen=True)
class Concurrency:
    limit: int
    key: str | None = None


@dataclass(frozen=True)
class Throttle:
    limit: int
    period: Duration
    burst: int = 1
    key: str | None = None


@dataclass(frozen=True)
class RateLimit:
    limit: int
    period: Duration
    key: str | None = None


@dataclass(frozen=True)
class Debounce:
    period: Duration
    key: str | None = None
    timeout: Duration | None = None


@dataclass(frozen=True)
class Priority:
    run: str


@dataclass(frozen=True)
class BatchEvents:
    max_size: int
    timeout: Duration
    key: str | None = None


@dataclass(frozen=True)
class Timeouts:
    """Cancel a run not started within ``start`` or not ended within ``finish``."""

    start: Duration | None = None
    finish: Duration | None = None


@dataclass(frozen=True)
class Singleton:
    key: str | None = None
    mode: Literal["skip", "cancel"] = "skip"
