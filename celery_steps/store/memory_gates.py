"""Flow-control gates of the in-process store: the same rules as the Redis gate scripts
(``store/lua/gate_take.lua``, ``gate_free.lua``, ``throttle.lua``, ``admit.lua``), kept in
dicts. Not thread-safe on its own: :class:`~celery_steps.store.memory.MemoryStore` calls it
under its lock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from celery_steps.store.base import (
    CONCURRENCY_RETRY_MS,
    WAITER_GRACE_MS,
    ConcurrencyGate,
    ThrottleGate,
)


@dataclass
class _Queue:
    """A gate's waiting queue: member -> score, and when each waiter is forgotten."""

    scores: dict[str, int] = field(default_factory=dict)
    forget: dict[str, int] = field(default_factory=dict)
    arrivals: int = 0

    def rank(self, member: str, base: int) -> int:
        """The member's rank (0 = head), queuing it first if it is not."""
        if member not in self.scores:
            self.arrivals += 1
            self.scores[member] = base * 1024 + self.arrivals % 1024
        mine = (self.scores[member], member)
        return sum(1 for m, score in self.scores.items() if (score, m) < mine)

    def head(self, count: int) -> list[str]:
        return [m for _, m in sorted((score, m) for m, score in self.scores.items())[:count]]

    def purge(self, now: int) -> None:
        for member in [m for m, until in self.forget.items() if until <= now]:
            self.leave(member)

    def leave(self, member: str) -> None:
        self.scores.pop(member, None)
        self.forget.pop(member, None)


class GateBook:
    """Every gate's state: places, queues, throttle clocks and rate windows."""

    def __init__(self) -> None:
        self.places: dict[str, dict[str, int]] = {}  # concurrency gate -> member -> until
        self.queues: dict[str, _Queue] = {}
        self.tats: dict[str, float] = {}  # throttle gate -> theoretical arrival time
        self.windows: dict[str, list[int]] = {}  # rate-limit gate -> admission times

    def _queue(self, gate: str) -> _Queue:
        return self.queues.setdefault(gate, _Queue())

    def pass_run(self, concurrency: tuple[ConcurrencyGate, ...], throttle: ThrottleGate | None,
                 member: str, *, now: int, lease_ms: int, created_at: int, priority_ms: int,
                 started: bool) -> tuple[int | None, list[str]]:
        """A run's places in all its gates, as the Redis store takes them: (None, woken) when
        it has them, (ms to wait, woken) when refused; woken: runs owed a place given back."""
        began = (now if started else created_at) - priority_ms
        held: list[ConcurrencyGate] = []
        for gate in concurrency:
            if self.take(gate, member, now=now, lease_ms=lease_ms, base=began,
                         forget_at=now + CONCURRENCY_RETRY_MS + WAITER_GRACE_MS) == "limited":
                return CONCURRENCY_RETRY_MS, self.free_all(held, member, now)
            held.append(gate)
        if throttle is not None:
            wait = self.throttle("take", throttle, member, base=created_at - priority_ms,
                                 now=now)
            if wait > 0:
                return wait, self.free_all(held, member, now)
        return None, []

    def free_all(self, gates: list[ConcurrencyGate] | tuple[ConcurrencyGate, ...], member: str,
                 now: int | None) -> list[str]:
        """Give back places; the waiters now owed them."""
        return [woken for gate in gates for woken in self.free(gate, member, now)]

    def take(self, gate: ConcurrencyGate, member: str, *, now: int, lease_ms: int, base: int,
             forget_at: int) -> Literal["held", "taken", "limited"]:
        places = self.places.setdefault(gate.key, {})
        for gone in [m for m, until in places.items() if until <= now]:
            del places[gone]
        queue = self._queue(gate.key)
        queue.purge(now)
        if member in places:
            places[member] = now + lease_ms
            queue.leave(member)
            return "held"
        free = gate.limit - len(places)
        if free > 0 and queue.rank(member, base) < free:
            places[member] = now + lease_ms
            queue.leave(member)
            return "taken"
        queue.rank(member, base)
        queue.forget[member] = forget_at
        return "limited"

    def free(self, gate: ConcurrencyGate, member: str, now: int | None) -> list[str]:
        """Give back a place; the waiters now owed the free places."""
        places = self.places.setdefault(gate.key, {})
        places.pop(member, None)
        queue = self._queue(gate.key)
        queue.leave(member)
        if now is not None:
            for gone in [m for m, until in places.items() if until <= now]:
                del places[gone]
            queue.purge(now)
        free = gate.limit - len(places)
        return queue.head(free) if free > 0 else []

    def renew(self, gate: ConcurrencyGate, member: str, until: int) -> None:
        places = self.places.get(gate.key, {})
        if member in places:
            places[member] = until

    def throttle(self, mode: Literal["join", "take"], gate: ThrottleGate, member: str, *,
                 base: int, now: int, grace_ms: int = WAITER_GRACE_MS) -> int:
        interval = gate.period_ms / gate.limit
        tolerance = (gate.burst - 1) * interval
        queue = self._queue(gate.key)
        queue.purge(now)
        tat = max(self.tats.get(gate.key, now), now)
        allowed = math.floor((now + tolerance - tat) / interval) + 1
        rank = queue.rank(member, base)
        if mode == "take" and rank < allowed:
            self.tats[gate.key] = tat + interval
            queue.leave(member)
            return 0
        wait = max(0, math.ceil(tat + rank * interval - tolerance - now))
        queue.forget[member] = now + wait + grace_ms
        return wait

    def leave_queue(self, gate: str, member: str) -> None:
        queue = self.queues.get(gate)
        if queue is not None:
            queue.leave(member)

    def admit_rate(self, gate: str, *, limit: int, period_ms: int, now: int) -> bool:
        window = [t for t in self.windows.get(gate, []) if t > now - period_ms]
        if len(window) >= limit:
            self.windows[gate] = window
            return False
        self.windows[gate] = [*window, now]
        return True
