"""Flow control on Redis: rate limits, singletons, debounce/batch gates, and the concurrency
and throttle gates that :class:`~celery_steps.store.redis.RedisStore` passes a run through.

A gate's keys are never touched by a run's scripts (in Redis Cluster a script only touches the
keys of one slot, and a run's keys share its ``{run_id}`` hash tag): the store takes a run's
places with the gate scripts before the run's own script (``acquire``), and frees them after
(``suspend``, ``finish``, ``cancel``, ``release``), from what that script returns. A place
taken by a process that dies before the run's script ran expires with its lease.

Keys of a concurrency gate ``G`` (named with a hash tag, see ``runtime/gates.py``): ``G``
(zset: timer members of the runs holding a place, scored by lease expiry), ``G:q`` (zset: the
waiting queue, scored by ``(began to wait - priority) * 1024 + arrival``), ``G:qx`` (zset:
when each waiter is forgotten unless it asks again), ``G:qn`` (the arrival counter). A throttle
gate ``T`` has ``T`` (string: GCRA theoretical arrival time) and the same three queue keys.

Singleton and debounce/batch gates name a run (``<run id>|<claimed at ms>``), whose keys are
in another slot: the store reads the gate, checks or changes the run with the run's own
script, then compare-and-sets the gate. A run that a gate names but that does not exist was
being created a moment ago (its gate is claimed first) or never will be (its creator died):
the first is waited for, the second replaced, after ``SINGLETON_CLAIM_MS``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

import redis

from celery_steps.store.base import (
    CONCURRENCY_RETRY_MS,
    SINGLETON_CLAIM_MS,
    WAITER_GRACE_MS,
    ConcurrencyGate,
    GateTaken,
    ThrottleGate,
)
from celery_steps.store.redis_keys import KeyLayout
from celery_steps.store.redis_values import s

GATE_SCRIPTS = ("admit", "claim_singleton", "clear_gate", "join_pending", "gate_take",
                "gate_free", "throttle")
# A gate naming a run that does not exist yet is read again (every 2 ms, then less often) for
# this long: its creator claimed it and creates the run a moment later, unless it died.
CREATE_WAIT_S = 5.0


def parse_concurrency(raw: Any) -> list[ConcurrencyGate]:
    """A run's ``conc`` field: JSON ``[[key, limit], ...]`` (or the older ``limit|key``)."""
    text = s(raw) if raw is not None else ""
    if not text:
        return []
    if not text.startswith("["):
        limit, _, key = text.partition("|")
        return [ConcurrencyGate(key, int(limit))]
    return [ConcurrencyGate(str(key), int(limit)) for key, limit in json.loads(text)]


def dump_concurrency(gates: tuple[ConcurrencyGate, ...]) -> str:
    return json.dumps([[g.key, g.limit] for g in gates], separators=(",", ":")) if gates else ""


def dump_throttle(gate: ThrottleGate | None) -> str:
    if gate is None:
        return ""
    return json.dumps([gate.key, gate.limit, gate.period_ms, gate.burst], separators=(",", ":"))


def queue_keys(gate: str) -> list[str]:
    """A gate and its waiting queue: places (or GCRA clock), queue, forget times, counter."""
    return [gate, gate + ":q", gate + ":qx", gate + ":qn"]


class RedisGates:
    """The flow-control half of :class:`~celery_steps.store.redis.RedisStore` (a mixin)."""

    r: redis.Redis
    keys: KeyLayout
    _scripts: dict[str, Any]
    _wake: Callable[[list[str]], None]  # RedisTimers'

    # -- the concurrency and throttle gates of a run ----------------------------------------
    def _take_places(self, reply: list[Any], member: str, now: int,
                     lease_ms: int) -> tuple[list[ConcurrencyGate], int | None]:
        """Take a place in each gate of a run, from acquire's ``{'gates', conc, thr, prio,
        created_at, started}``: (places held, None), or ([], ms to wait) when refused."""
        conc, thr = parse_concurrency(reply[1]), s(reply[2])
        priority, created_at = int(s(reply[3]) or 0), int(s(reply[4]))
        began = now if s(reply[5]) == "1" else created_at
        held: list[ConcurrencyGate] = []
        for gate in conc:
            answer = s(self._scripts["gate_take"](
                keys=queue_keys(gate.key),
                args=[member, now, lease_ms, gate.limit, began - priority,
                      now + CONCURRENCY_RETRY_MS + WAITER_GRACE_MS]))
            if answer == "limited":
                self._free_places(held, member, now)
                return [], CONCURRENCY_RETRY_MS
            held.append(gate)
        if thr:
            key, limit, period_ms, burst = json.loads(thr)
            wait = int(self._scripts["throttle"](
                keys=queue_keys(key),
                args=["take", member, created_at - priority, now, limit, period_ms, burst,
                      WAITER_GRACE_MS]))
            if wait > 0:
                self._free_places(held, member, now)
                return [], wait
        return held, None

    def _free_places(self, gates: list[ConcurrencyGate], member: str,
                     now: int | None) -> None:
        """Give back a run's places and wake the runs now owed them (their timers are due
        at once)."""
        woken: list[str] = []
        when = "" if now is None else now
        for gate in gates:
            heads = self._scripts["gate_free"](keys=queue_keys(gate.key)[:3],
                                               args=[member, gate.limit, when])
            woken.extend(s(m) for m in heads)
        self._wake(woken)

    def _after_let_go(self, conc: Any, member: Any, now: int | None) -> None:
        gates = parse_concurrency(conc)
        if gates:
            self._free_places(gates, s(member), now)

    def _renew_places(self, conc: Any, member: Any, until: int) -> None:
        gates = parse_concurrency(conc)
        if gates:
            with self.r.pipeline(transaction=False) as pipe:
                for gate in gates:
                    pipe.zadd(gate.key, {s(member): until}, xx=True)
                pipe.execute()

    def _leave_throttle(self, thr: Any, member: Any) -> None:
        text = s(thr)
        if text:
            key = json.loads(text)[0]
            with self.r.pipeline(transaction=False) as pipe:
                for queue in queue_keys(key)[1:3]:
                    pipe.zrem(queue, s(member))
                pipe.execute()

    # -- admission at routing ----------------------------------------------------------------
    def admit_rate(self, gate: str, *, limit: int, period_ms: int, now: int) -> bool:
        return int(self._scripts["admit"](
            keys=[gate], args=[limit, period_ms, now, uuid.uuid4().hex])) == 0

    def join_throttle(self, gate: ThrottleGate, *, function_id: str, run_id: str, score: int,
                      now: int) -> int:
        return int(self._scripts["throttle"](
            keys=queue_keys(gate.key),
            args=["join", f"r|{function_id}|{run_id}", score, now, gate.limit, gate.period_ms,
                  gate.burst, WAITER_GRACE_MS]))

    def join_pending(self, gate: str, event: dict[str, Any], *, mode: Literal["debounce", "batch"],
                     now: int, max_size: int, period_ms: int,
                     timeout_ms: int | None) -> tuple[str, bool] | None:
        compact = {k: v for k, v in event.items() if v is not None}
        deadline, pause = time.monotonic() + CREATE_WAIT_S, 0.002
        while True:
            raw = self.r.get(gate)
            if raw is None:
                return None
            run_id, _, claimed = s(raw).partition("|")
            rk = self.keys.run_keys(run_id)
            joined = int(self._scripts["join_pending"](
                keys=[rk.meta, rk.events, rk.eids, rk.timers],
                args=[mode, json.dumps(compact, separators=(",", ":")), now, max_size,
                      period_ms, "" if timeout_ms is None else timeout_ms,
                      str(event.get("id")), gate, run_id]))
            if joined > 0:
                if joined == 2:  # full: the next event opens another batch
                    self._scripts["clear_gate"](keys=[gate], args=[run_id])
                return run_id, joined == 2
            if joined < 0 and now - int(claimed or 0) < SINGLETON_CLAIM_MS \
                    and time.monotonic() < deadline:
                time.sleep(pause)  # claimed a moment ago: its run is being created
                pause = min(pause * 2, 0.1)
                continue
            self._scripts["clear_gate"](keys=[gate], args=[run_id])  # it collects no more
            return None

    def _open_pending(self, gate: str, run_id: str, now: int) -> None:
        """Claim a debounce/batch gate for the new run collecting its events (before the run
        is created): :class:`GateTaken` when another run collects for it."""
        if self.r.set(gate, f"{run_id}|{now}", nx=True):
            return
        current = s(self.r.get(gate) or b"").partition("|")[0]
        if current != run_id:  # (the same run: a retried create)
            raise GateTaken(gate)

    def _close_pending(self, gate: str, run_id: str) -> None:
        self._scripts["clear_gate"](keys=[gate], args=[run_id])

    def claim_singleton(self, gate: str, run_id: str, *, now: int,
                        force: bool = False) -> str | None:
        for _ in range(10):  # compare-and-set: again only when another claim came between
            raw = self.r.get(gate)
            current = s(raw) if raw is not None else ""
            if current and not force:
                holder, _, claimed = current.partition("|")
                if holder != run_id:
                    status = self.r.hget(self.keys.run(holder), "status")
                    if status is not None and s(status) not in ("completed", "failed",
                                                                 "cancelled"):
                        return holder
                    if status is None and now - int(claimed or 0) < SINGLETON_CLAIM_MS:
                        return holder  # claimed moments ago: its run is being created
            if int(self._scripts["claim_singleton"](keys=[gate],
                                                    args=[current, f"{run_id}|{now}"])):
                return None
        raise RuntimeError(f"the singleton gate {gate} kept changing")

    def release_singleton(self, gate: str, run_id: str) -> None:
        self._scripts["clear_gate"](keys=[gate], args=[run_id])
