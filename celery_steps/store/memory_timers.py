"""The timers of the in-process store: due times by member, and the condition a blocked
poller waits on (woken when a timer becomes the earliest)."""

from __future__ import annotations

import threading


class MemoryTimers:
    """The timer half of :class:`~celery_steps.store.memory.MemoryStore` (a mixin sharing
    its lock)."""

    _lock: threading.RLock
    _signal: threading.Condition
    _timers: dict[str, int]

    def schedule(self, member: str, due: int) -> None:
        with self._lock:
            self._schedule(member, due)

    def unschedule(self, member: str) -> None:
        with self._lock:
            self._timers.pop(member, None)

    def claim_due(self, *, now: int, limit: int, redo_ms: int) -> list[tuple[str, int]]:
        with self._lock:
            due = sorted((score, m) for m, score in self._timers.items() if score <= now)[:limit]
            for _, member in due:
                self._timers[member] = now + redo_ms
            return [(member, now + redo_ms) for _, member in due]

    def ack_timers(self, claimed: list[tuple[str, int]]) -> None:
        with self._lock:
            for member, score in claimed:
                if self._timers.get(member) == score:
                    del self._timers[member]

    def next_due(self) -> int | None:
        with self._lock:
            return min(self._timers.values(), default=None)

    def wait_for_signal(self, timeout: float) -> None:
        with self._signal:
            self._signal.wait(timeout)

    def signal(self) -> None:
        with self._signal:
            self._signal.notify_all()

    def timer_members(self) -> dict[str, int]:
        """A copy of every pending timer (for tests and the testing helpers)."""
        with self._lock:
            return dict(self._timers)

    def _schedule(self, member: str, due: int) -> None:
        earliest = min(self._timers.values(), default=None)
        self._timers[member] = due
        if earliest is None or due < earliest:
            self._signal.notify_all()
