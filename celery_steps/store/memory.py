"""In-process store: unit tests, eager mode and demos. One process only, nothing persists.

Same semantics as :class:`~celery_steps.store.redis.RedisStore`, including time: what
expires in Redis (events after the dedupe window, ended runs after the retention, process
keys after the lease) expires here by the injected clock, so a ``FakeClock`` ages it.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from celery_steps.clock import Clock
from celery_steps.expressions import MISSING, lookup_path, match_key
from celery_steps.runs import ENDED
from celery_steps.store.base import (
    BUSY_MARGIN_MS,
    BUSY_RECHECK_MS,
    FINAL,
    NOTIFY_SAFETY_MS,
    SINGLETON_CLAIM_MS,
    AcquireStatus,
    ConcurrencyGate,
    GateTaken,
    NewRun,
    Outcome,
    RunRecord,
    SaveStatus,
    Skip,
    StateStore,
    Suspension,
    ThrottleGate,
    Waiter,
    proc_host,
    proc_of,
)
from celery_steps.store.memory_gates import GateBook
from celery_steps.store.memory_timers import MemoryTimers


@dataclass
class _Run:
    record: RunRecord
    holder: str | None = None
    wake: bool = False
    waiters: list[Waiter] = field(default_factory=list)
    expires_at: int | None = None
    concurrency: tuple[ConcurrencyGate, ...] = ()
    throttle: ThrottleGate | None = None  # until its first start
    priority_ms: int = 0
    started: bool = False  # it went through its gates once
    pending: str | None = None
    pending_since: int = 0
    event_ids: set[str] = field(default_factory=set)
    branches: dict[str, tuple[str, int]] = field(default_factory=dict)


class MemoryStore(MemoryTimers, StateStore):
    """A dict-backed :class:`StateStore` with the same semantics as the Redis one."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or Clock()
        self._lock = threading.RLock()
        self._signal = threading.Condition(self._lock)
        self._ended = threading.Condition(self._lock)  # a run ended (wait_for_run)
        self._events: dict[str, tuple[str, int]] = {}  # id -> (envelope, expires at)
        self._routed: dict[str, tuple[list[str], int]] = {}
        self._skips: dict[str, list[Skip]] = {}  # expire with _routed
        self._runs: dict[str, _Run] = {}
        self._timers: dict[str, int] = {}
        self._functions: set[str] = set()
        self._procs: dict[str, int] = {}  # live process -> until
        self._holding: dict[str, list[str]] = {}  # live process -> timers of its runs
        # (run_task task id, "started" | "ended") -> (until, what a worker recorded)
        self._tasks: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
        self._gates = GateBook()
        self._singletons: dict[str, tuple[str, int]] = {}  # gate -> (run, claimed at)
        self._pending: dict[str, str] = {}  # debounce/batch gate -> run collecting events
        # event name -> bucket ("" or "path=value") -> member -> waiter
        self._waiters: dict[str, dict[str, dict[str, Waiter]]] = {}

    def _now(self) -> int:
        return self._clock.now_ms()

    # -- events -------------------------------------------------------------------------
    def put_event(self, event_id: str, event_json: str, *, route_at: int, ttl_ms: int) -> bool:
        with self._lock:
            stored = self._live_event(event_id)
            if stored is not None:  # the same event again is a retry, not a duplicate
                return stored.endswith(f',"event":{event_json}}}')
            now = self._now()
            envelope = f'{{"received_at":{now},"event":{event_json}}}'
            self._events[event_id] = (envelope, now + ttl_ms)
            self._schedule(f"e|{event_id}", route_at)
            return True

    def _live_event(self, event_id: str) -> str | None:
        item = self._events.get(event_id)
        if item is not None and item[1] <= self._now():
            del self._events[event_id]
            return None
        return item[0] if item else None

    def get_event(self, event_id: str) -> str | None:
        with self._lock:
            return self._live_event(event_id)

    def complete_routing(self, event_id: str, run_ids: list[str], *, ttl_ms: int,
                         skipped: tuple[Skip, ...] = ()) -> None:
        with self._lock:
            merged = list(self._routed_now(event_id) or [])
            merged.extend(r for r in run_ids if r not in merged)
            self._routed[event_id] = (merged, self._now() + ttl_ms)
            skips = self._skips.setdefault(event_id, [])
            known = {s.function_id for s in skips}
            skips.extend(s for s in skipped if s.function_id not in known)
            self._timers.pop(f"e|{event_id}", None)

    def skipped_starts(self, event_id: str) -> list[Skip]:
        with self._lock:
            routed = self._routed_now(event_id) is not None
            return list(self._skips.get(event_id, [])) if routed else []

    def _routed_now(self, event_id: str) -> list[str] | None:
        item = self._routed.get(event_id)
        if item is not None and item[1] <= self._now():
            del self._routed[event_id]
            self._skips.pop(event_id, None)
            return None
        return item[0] if item else None

    def routed_runs(self, event_id: str) -> list[str] | None:
        with self._lock:
            runs = self._routed_now(event_id)
            return list(runs) if runs is not None else None

    # -- runs ---------------------------------------------------------------------------
    def _entry(self, run_id: str) -> _Run | None:
        """The run, unless it expired after its retention."""
        entry = self._runs.get(run_id)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= self._now():
            del self._runs[run_id]
            return None
        return entry

    def create_run(self, run: NewRun) -> bool:
        with self._lock:
            if self._entry(run.id) is not None:
                return False
            if run.pending is not None:
                holder = self._pending.get(run.pending)
                if holder is not None:
                    raise GateTaken(run.pending)
            record = RunRecord(
                id=run.id,
                function_id=run.function_id,
                status="queued",
                created_at=run.created_at,
                event_ids=list(run.event_ids),
                parent=copy.deepcopy(run.parent),
                events=copy.deepcopy(run.events),
                deadlines=dict(run.deadlines),
                trace=run.trace,
            )
            entry = self._runs[run.id] = _Run(record, concurrency=run.concurrency,
                                              throttle=run.throttle,
                                              priority_ms=run.priority_ms,
                                              pending=run.pending,
                                              pending_since=run.created_at)
            if run.pending is not None:
                self._pending[run.pending] = run.id
                entry.event_ids = set(run.event_ids)
            for waiter in run.waiters:
                self._add_waiter(entry, waiter)
            if run.start_by is not None:
                self._schedule(f"r|{run.function_id}|{run.id}", run.start_by)
            return True

    def load_run(self, run_id: str) -> RunRecord | None:
        with self._lock:
            entry = self._entry(run_id)
            return _measured(copy.deepcopy(entry.record)) if entry else None

    def list_runs(
        self, *, function_id: str | None, status: str | None, limit: int,
        before: tuple[int, str] | None = None,
    ) -> list[RunRecord]:
        with self._lock:
            records = [
                entry.record
                for entry in (self._entry(run_id) for run_id in list(self._runs))
                if entry is not None
                and (function_id is None or entry.record.function_id == function_id)
                and (status is None or entry.record.status == status)
                and (before is None or (entry.record.created_at, entry.record.id) < before)
            ]
            records.sort(key=lambda r: (r.created_at, r.id), reverse=True)
            return [copy.deepcopy(r) for r in records[:limit]]

    def acquire(
        self, run_id: str, holder: str, *, function_id: str, now: int, lease_ms: int
    ) -> tuple[AcquireStatus, RunRecord | None]:
        with self._lock:
            entry = self._entry(run_id)
            if entry is None:
                return "missing", None
            record = entry.record
            if record.function_id != function_id:
                return "foreign", None
            if record.status in ENDED:
                if not record.notify:  # nothing wakes it any more (see acquire.lua)
                    self._timers.pop(f"r|{function_id}|{run_id}", None)
                return "ended", (copy.deepcopy(record) if record.notify else None)
            if entry.holder == holder:
                return "ok", copy.deepcopy(record)
            if entry.holder is not None:
                until = self._procs.get(proc_of(entry.holder), 0)
                if until > self._now():
                    # look again soon (its heartbeat pushes this back while alive)
                    entry.wake = True
                    member = self._run_member(entry)
                    due = now + min(until - self._now(), BUSY_RECHECK_MS) + BUSY_MARGIN_MS
                    self._timers[member] = min(self._timers.get(member, due), due)
                    return "busy", None
            if entry.concurrency or entry.throttle is not None:
                wait = self._take_places(entry, now, lease_ms)
                if wait is not None:
                    self._schedule(self._run_member(entry), now + wait)
                    return "limited", None
            if entry.holder is not None:
                record.crashes += 1  # its process died holding it
                entry.holder = None
            if entry.pending is not None and self._pending.get(entry.pending) == run_id:
                del self._pending[entry.pending]  # later events open a new debounce/batch
            entry.holder, entry.wake = holder, False
            record.status = "running"
            self._schedule(self._run_member(entry), now + lease_ms)
            return "ok", _measured(copy.deepcopy(record))

    def renew(self, run_id: str, holder: str, *, now: int, lease_ms: int,
              running: tuple[str, int] | None = None) -> bool:
        with self._lock:
            entry = self._held(run_id, holder)
            if entry is None or entry.record.status != "running":
                return False
            entry.record.running_step = running
            for gate in entry.concurrency:
                self._gates.renew(gate, self._run_member(entry), now + lease_ms)
            self._schedule(self._run_member(entry), now + lease_ms)
            return True

    def beat(self, proc: str, *, ttl_ms: int, holding: list[str] | None = None) -> None:
        with self._lock:
            if holding is not None:
                self._holding[proc] = list(holding)
            elif self._procs.get(proc, 0) <= self._now():
                return  # only extends a live key
            self._procs[proc] = self._now() + ttl_ms

    def reap(self, proc: str) -> None:
        with self._lock:
            self._procs.pop(proc, None)
            for member in self._holding.pop(proc, []):
                self._schedule(member, 0)

    def host_procs(self, host: str) -> list[str]:
        with self._lock:
            return sorted(p for p in self._holding if proc_host(p) == host)

    def begin_wait(self, run_id: str, holder: str, step_key: str, state: dict[str, Any],
                   waiters: tuple[Waiter, ...]) -> bool:
        with self._lock:
            entry = self._held(run_id, holder)
            if entry is None or entry.record.status == "cancelled":
                return False
            current = entry.record.steps.get(step_key)
            if current is None or current.get("status") not in FINAL:
                entry.record.steps[step_key] = copy.deepcopy(state)
            for waiter in waiters:
                self._add_waiter(entry, waiter)
            return True

    def save_step(
        self, run_id: str, holder: str, step_key: str, state: dict[str, Any]
    ) -> tuple[SaveStatus, dict[str, Any] | None]:
        with self._lock:
            entry = self._entry(run_id)
            if entry is not None and entry.record.status == "cancelled":
                return "cancelled", None
            entry = self._held(run_id, holder)
            if entry is None:
                return "lost", None
            current = entry.record.steps.get(step_key)
            if current is not None and current.get("status") in FINAL:
                return "exists", copy.deepcopy(current)
            entry.record.steps[step_key] = copy.deepcopy(state)
            entry.record.crashes = 0
            entry.record.running_step = None
            return "ok", None

    def suspend(self, run_id: str, holder: str, suspension: Suspension) -> bool | None:
        with self._lock:
            entry = self._held(run_id, holder)
            if entry is None or entry.record.status == "cancelled":
                return None
            if suspension.step_key is not None and suspension.step_state is not None:
                current = entry.record.steps.get(suspension.step_key)
                if current is None or current.get("status") not in FINAL:
                    entry.record.steps[suspension.step_key] = copy.deepcopy(suspension.step_state)
            if suspension.attempt is not None:
                entry.record.attempt = suspension.attempt
            entry.record.crashes = 0
            entry.record.running_step = None
            for waiter in suspension.waiters:
                self._add_waiter(entry, waiter)
            if entry.wake:
                entry.wake = False
                return True
            entry.record.status = suspension.status
            entry.holder = None
            self._free(entry, None)
            member = self._run_member(entry)
            if suspension.wake_at is None:
                self._timers.pop(member, None)
            else:
                self._schedule(member, suspension.wake_at)
            return False

    def finish(self, run_id: str, holder: str, outcome: Outcome, *, retention_ms: int) -> bool:
        with self._lock:
            entry = self._held(run_id, holder)
            if entry is None:
                return False
            if entry.record.status == "cancelled":
                entry.holder = None
                return False
            self._end(entry, outcome, retention_ms)
            return True

    def wait_ended(self, run_id: str, timeout: float) -> None:
        with self._ended:
            entry = self._entry(run_id)
            if entry is not None and entry.record.status not in ENDED:
                self._ended.wait(timeout)

    def notified(self, run_id: str) -> None:
        with self._lock:
            entry = self._entry(run_id)
            if entry is not None and entry.record.notify:
                entry.record.notify = False
                self._timers.pop(self._run_member(entry), None)

    def release(self, run_id: str, holder: str) -> None:
        with self._lock:
            entry = self._held(run_id, holder)
            if entry is not None:
                entry.holder = None
                entry.record.running_step = None
                self._free(entry, None)

    def cancel(self, run_id: str, *, now: int, reason: str, retention_ms: int) -> str | None:
        with self._lock:
            entry = self._entry(run_id)
            if entry is None:
                return None
            previous = entry.record.status
            if previous not in ENDED:
                error = {"name": "Cancelled", "message": reason}
                self._end(entry, Outcome("cancelled", now, None, error), retention_ms)
            return previous

    def resolve_step(
        self, run_id: str, step_key: str, state: dict[str, Any], *, wake_at: int, wake: bool = True
    ) -> bool:
        with self._lock:
            entry = self._entry(run_id)
            if entry is None or entry.record.status in ENDED:
                return False
            current = entry.record.steps.get(step_key)
            if current is not None and current.get("status") in FINAL:
                return False
            entry.record.steps[step_key] = {**(current or {}), **copy.deepcopy(state)}
            for waiter in [w for w in entry.waiters if w.step_key == step_key]:
                self._drop_waiter(entry, waiter)
            if wake:
                entry.wake = True
                self._schedule(self._run_member(entry), wake_at)
            return True

    def acquire_branch(self, run_id: str, step_key: str, holder: str, *,
                       function_id: str) -> tuple[AcquireStatus, RunRecord | None, int]:
        with self._lock:
            entry = self._entry(run_id)
            if entry is None:
                return "missing", None, 0
            if entry.record.function_id != function_id:
                return "foreign", None, 0
            if entry.record.status in ENDED:
                return "ended", None, 0
            current, crashes = entry.branches.get(step_key, (holder, 0))
            if current != holder:
                if self._procs.get(proc_of(current), 0) > self._now():
                    return "busy", None, 0
                crashes += 1  # its process died running the branch
            entry.branches[step_key] = (holder, crashes)
            return "ok", copy.deepcopy(entry.record), crashes

    def release_branch(self, run_id: str, step_key: str, holder: str) -> None:
        with self._lock:
            entry = self._entry(run_id)
            if entry is not None and entry.branches.get(step_key, ("", 0))[0] == holder:
                del entry.branches[step_key]

    def proc_alive(self, proc: str) -> bool:
        with self._lock:
            return self._procs.get(proc, 0) > self._now()

    def note_task(self, task_id: str, outcome: dict[str, Any], *, ttl_ms: int) -> None:
        kind = "ended" if outcome.get("status") in FINAL else "started"
        with self._lock:
            self._tasks[(task_id, kind)] = (self._now() + ttl_ms, copy.deepcopy(outcome))

    def task_outcome(self, task_id: str) -> dict[str, Any] | None:
        with self._lock:
            for kind in ("ended", "started"):
                until, outcome = self._tasks.get((task_id, kind), (0, {}))
                if until > self._now():
                    return copy.deepcopy(outcome)
            return None

    # -- flow control -------------------------------------------------------------------
    def admit_rate(self, gate: str, *, limit: int, period_ms: int, now: int) -> bool:
        with self._lock:
            return self._gates.admit_rate(gate, limit=limit, period_ms=period_ms, now=now)

    def join_throttle(self, gate: ThrottleGate, *, function_id: str, run_id: str, score: int,
                      now: int) -> int:
        with self._lock:
            return self._gates.throttle("join", gate, f"r|{function_id}|{run_id}", base=score,
                                        now=now)

    def _take_places(self, entry: _Run, now: int, lease_ms: int) -> int | None:
        """Take the run's places in its gates: None, or ms to wait when refused (queued)."""
        wait, woken = self._gates.pass_run(
            entry.concurrency, entry.throttle, self._run_member(entry), now=now,
            lease_ms=lease_ms, created_at=entry.record.created_at,
            priority_ms=entry.priority_ms, started=entry.started)
        for member in woken:
            self._schedule(member, 0)
        if wait is None:
            entry.started, entry.throttle = True, None
        return wait

    def join_pending(self, gate: str, event: dict[str, Any], *, mode: Literal["debounce", "batch"],
                     now: int, max_size: int, period_ms: int,
                     timeout_ms: int | None) -> tuple[str, bool] | None:
        with self._lock:
            run_id = self._pending.get(gate)
            entry = self._entry(run_id) if run_id is not None else None
            if run_id is None or entry is None or entry.record.status != "queued":
                self._pending.pop(gate, None)
                return None
            record = entry.record
            event_id = str(event.get("id"))
            if event_id in entry.event_ids:
                return run_id, False  # this event joined already (routed twice)
            entry.event_ids.add(event_id)
            member = self._run_member(entry)
            if mode == "debounce":
                record.events = [copy.deepcopy(event)]
                due = now + period_ms
                if timeout_ms is not None:
                    due = min(due, entry.pending_since + timeout_ms)
                self._schedule(member, due)
            else:
                record.events.append(copy.deepcopy(event))
                if len(record.events) >= max_size:
                    del self._pending[gate]
                    self._schedule(member, now)
                    record.event_ids = [str(e.get("id")) for e in record.events]
                    return run_id, True
            record.event_ids = [str(e.get("id")) for e in record.events]
            return run_id, False

    def claim_singleton(self, gate: str, run_id: str, *, now: int,
                        force: bool = False) -> str | None:
        with self._lock:
            claim = self._singletons.get(gate)
            if claim is not None and not force and claim[0] != run_id:
                holder, claimed_at = claim
                entry = self._entry(holder)
                if entry is not None:
                    if entry.record.status not in ENDED:
                        return holder
                elif now - claimed_at < SINGLETON_CLAIM_MS:
                    return holder  # claimed moments ago: its run is being created
            self._singletons[gate] = (run_id, now)
            return None

    def release_singleton(self, gate: str, run_id: str) -> None:
        with self._lock:
            if self._singletons.get(gate, ("",))[0] == run_id:
                del self._singletons[gate]

    def _free(self, entry: _Run, now: int | None) -> None:
        """Give back the run's places; the runs now owed them are due at once."""
        for member in self._gates.free_all(entry.concurrency, self._run_member(entry), now):
            self._schedule(member, 0)

    # -- functions ----------------------------------------------------------------------
    def register_functions(self, function_ids: list[str]) -> None:
        with self._lock:
            self._functions.update(function_ids)

    def known_function(self, function_id: str) -> bool:
        with self._lock:
            return function_id in self._functions

    # -- waiters ------------------------------------------------------------------------
    def find_waiters(self, event_name: str, event: dict[str, Any]) -> list[Waiter]:
        with self._lock:
            buckets = self._waiters.get(event_name, {})
            found = list(buckets.get("", {}).values())
            for bucket_key, members in buckets.items():
                if not bucket_key:
                    continue
                path, _, wanted = bucket_key.partition("=")
                value = lookup_path(event, path)
                if value is not MISSING and match_key(value) == wanted:
                    found.extend(members.values())
            return found

    def _add_waiter(self, entry: _Run, waiter: Waiter) -> None:
        if any(w.member == waiter.member and w.event_name == waiter.event_name
               for w in entry.waiters):
            return
        waiter = replace(waiter, registered_at=self._now())
        entry.waiters.append(waiter)
        bucket = f"{waiter.match_path}={waiter.match_key}" if waiter.match_path else ""
        self._waiters.setdefault(waiter.event_name, {}).setdefault(bucket, {})[
            waiter.member
        ] = waiter

    def _drop_waiter(self, entry: _Run, waiter: Waiter) -> None:
        entry.waiters.remove(waiter)
        bucket = f"{waiter.match_path}={waiter.match_key}" if waiter.match_path else ""
        buckets = self._waiters.get(waiter.event_name, {})
        buckets.get(bucket, {}).pop(waiter.member, None)
        if bucket in buckets and not buckets[bucket]:
            del buckets[bucket]

    # -- housekeeping -------------------------------------------------------------------
    def sweep(self, *, now: int, older_than_ms: int, limit: int) -> int:
        with self._lock:
            before = len(self._runs)
            for run_id in list(self._runs):
                self._entry(run_id)  # drops it when it expired
            return before - len(self._runs)

    # -- helpers ------------------------------------------------------------------------
    def _held(self, run_id: str, holder: str) -> _Run | None:
        entry = self._entry(run_id)
        if entry is None or entry.holder != holder:
            return None
        return entry

    def _end(self, entry: _Run, outcome: Outcome, retention_ms: int) -> None:
        record = entry.record
        record.status = outcome.status
        record.ended_at = outcome.ended_at
        record.error = outcome.error
        record.crashes = 0
        record.running_step = None
        record.notify = True
        if outcome.output_json is not None:
            record.output = json.loads(outcome.output_json)
        entry.holder = None
        entry.wake = False
        self._free(entry, outcome.ended_at)
        if entry.throttle is not None:  # cancelled before it started
            self._gates.leave_queue(entry.throttle.key, self._run_member(entry))
        for waiter in list(entry.waiters):
            self._drop_waiter(entry, waiter)
        # the outbox: until the runtime confirms the notifications, this timer retries them
        self._schedule(self._run_member(entry), outcome.ended_at + NOTIFY_SAFETY_MS)
        entry.expires_at = self._now() + retention_ms
        self._ended.notify_all()

    @staticmethod
    def _run_member(entry: _Run) -> str:
        return f"r|{entry.record.function_id}|{entry.record.id}"


def _measured(record: RunRecord) -> RunRecord:
    """The record with ``state_bytes`` counted as the Redis store counts it."""
    compact = (",", ":")
    record.state_bytes = len(json.dumps(record.events, separators=compact)) + sum(
        len(json.dumps(state, separators=compact)) for state in record.steps.values())
    return record
