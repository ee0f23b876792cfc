"""The one source of time. Inject a :class:`FakeClock` to jump days ahead in tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone


class Clock:
    """Wall-clock time in milliseconds since the epoch (the unit everything is stored in)."""

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_ms() / 1000, tz=timezone.utc)

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when time jumps (never, for the real clock)."""


class FakeClock(Clock):
    """A clock that only moves when told to; listeners (timer pollers) hear each jump."""

    def __init__(self, start_ms: int | None = None) -> None:
        self._ms = start_ms if start_ms is not None else int(time.time() * 1000)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def now_ms(self) -> int:
        with self._lock:
            return self._ms

    def advance(self, delta: float | timedelta) -> None:
        """Move time forward by ``delta`` (seconds or a timedelta) and wake listeners."""
        if isinstance(delta, timedelta):
            ms = delta // timedelta(milliseconds=1)  # exact: no float rounding
        else:
            ms = round(float(delta) * 1000)
        with self._lock:
            self._ms += ms
        for callback in list(self._listeners):
            callback()

    def on_change(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)


def ms_to_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
