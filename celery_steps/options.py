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
    """At most ``limit`` runs execute at once, per value of ``key`` (a CEL expression over the
    event). ``scope="env"`` shares the limit with every function whose ``env`` constraint's
    key has the same value (``key`` is then required: it names the shared limit)."""

    limit: int
    key: str | None = None
    scope: Literal["fn", "env"] = "fn"


@dataclass(frozen=True)
class Throttle:
    """At most ``limit`` run starts per ``period`` (``burst`` at once); the rest wait."""

    limit: int
    period: Duration
    burst: int = 1
    key: str | None = None


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` run starts per ``period``; events beyond it start no run."""

    limit: int
    period: Duration
    key: str | None = None


@dataclass(frozen=True)
class Debounce:
    """One run per burst of events, ``period`` after the last (at most ``timeout`` after the
    first), with the last event."""

    period: Duration
    key: str | None = None
    timeout: Duration | None = None


@dataclass(frozen=True)
class Priority:
    """``run``: a CEL expression over the event giving seconds in [-600, 600]; a run waiting
    for a concurrency or throttle slot goes as if it had been queued that much earlier."""

    run: str


@dataclass(frozen=True)
class BatchEvents:
    """One run per ``max_size`` events, or per the events within ``timeout`` of the first."""

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
    """One active run per value of ``key``: ``"skip"`` new runs, or ``"cancel"`` the old one."""

    key: str | None = None
    mode: Literal["skip", "cancel"] = "skip"
