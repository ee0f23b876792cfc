"""The production store: Redis (one server, Sentinel or a Cluster), with a Lua script wherever
several keys change together.

Every key is named in ``redis_keys.py``. A script touches the keys of one run, or of one
event, together with its shard's timers and indexes: all in one slot, and all declared in
``KEYS`` (a run's waiter index keys too: the store remembers them per run, and a script that
finds one it was not given changes nothing and says which, to be called again). Flow-control
gates are keys of their own, taken and freed around the run scripts (``redis_gates.py``);
timers, process liveness, listing and the sweep are in ``redis_timers.py`` and
``redis_index.py``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from importlib import resources
from typing import Any

import redis

from celery_steps.errors import ConfigurationError
from celery_steps.store.base import (
    BUSY_MARGIN_MS,
    BUSY_RECHECK_MS,
    NOTIFY_SAFETY_MS,
    AcquireStatus,
    ConcurrencyGate,
    EventWrite,
    NewRun,
    Outcome,
    RunRecord,
    SaveStatus,
    Skip,
    StateStore,
    Suspension,
    Waiter,
    proc_of,
)
from celery_steps.store.redis_client import (
    CLUSTER_SHARDS,
    ThreadConnections,
    block_limit,
    connect,
    is_cluster,
)
from celery_steps.store.redis_gates import (
    GATE_SCRIPTS,
    RedisGates,
    dump_concurrency,
    dump_throttle,
)
from celery_steps.store.redis_guard import EvictionGuard, GuardedScript
from celery_steps.store.redis_index import RedisIndex
from celery_steps.store.redis_keys import KeyLayout
from celery_steps.store.redis_timers import RedisTimers
from celery_steps.store.redis_values import dumps, pairs, record_of, s

SCRIPTS = ("put_event", "complete_routing", "create_run", "load_run", "acquire", "renew",
           "save_step", "suspend", "finish", "notified", "release", "cancel", "resolve_step",
           "claim_due", "ack_timers", "schedule", "wake", "acquire_branch", "release_branch",
           "begin_wait", *GATE_SCRIPTS)
# Runs whose waiter index keys a process remembers (beyond that, a script says them again).
WAITER_KEYS_KEPT = 10_000


def _load_scripts() -> dict[str, str]:
    folder = resources.files("celery_steps.store") / "lua"
    lib = (folder / "lib.lua").read_text()
    return {name: lib + "\n" + (folder / f"{name}.lua").read_text() for name in SCRIPTS}


def _compact(event: dict[str, Any]) -> dict[str, Any]:
    """An event as stored with a run: null fields left out (the model restores them)."""
    return {k: v for k, v in event.items() if v is not None}


class RedisStore(RedisGates, RedisTimers, RedisIndex, StateStore):
    """:class:`StateStore` on Redis. One instance per process (re-created after fork)."""

    def __init__(self, client: redis.Redis, *, namespace: str = "celery_steps",
                 shards: int | None = None, check_policy: bool = True) -> None:
        self.r = client
        self.ns = namespace
        self.cluster = is_cluster(client)
        self.guard = EvictionGuard(client)
        if not check_policy:
            self.guard.recheck_s = float("inf")
        self.keys = KeyLayout(namespace, self._shard_count(shards))
        self.signal_key = self.keys.signal
        self._held = ThreadConnections.over(client)
        self._block_s = block_limit(client)
        held = None if self._held is None else self._held.client
        self._scripts = {name: GuardedScript(client.register_script(src), self.guard, held)
                         for name, src in _load_scripts().items()}
        self._waiter_keys: dict[str, tuple[str, ...]] = {}
        RedisTimers.__init__(self)
        RedisIndex.__init__(self)
        if check_policy:
            self.guard.check()

    @classmethod
    def from_url(cls, url: str, *, namespace: str = "celery_steps",
                 options: Mapping[str, Any] | None = None,
                 shards: int | None = None) -> RedisStore:
        """A store on ``url`` (see ``redis_client.connect`` for the schemes)."""
        return cls(connect(url, options), namespace=namespace, shards=shards)

    def _shard_count(self, configured: int | None) -> int:
        """The shard count: the one the namespace's data was written with, which a
        different configured count may not change."""
        wanted = configured or (CLUSTER_SHARDS if self.cluster else 1)
        key = f"{self.ns}:config"
        self.r.hsetnx(key, "shards", wanted)
        stored = int(self.r.hget(key, "shards") or wanted)
        if configured is not None and stored != configured:
            raise ConfigurationError(
                f"steps_store_shards is {configured}, but the data in namespace {self.ns!r} "
                f"was written with {stored} shards: set steps_store_shards = {stored} (a "
                "different count needs a new steps_namespace)")
        return stored

    def run_key(self, run_id: str) -> str:
        return self.keys.run(run_id)

    # -- waiter index keys (declared to the scripts that drop entries) -----------------------
    def _waiters_arg(self, run_id: str, waiters: tuple[Waiter, ...]) -> tuple[list[str], str]:
        """The index keys the waiters go to, and the scripts' JSON for them."""
        shard = self.keys.shard_of(run_id)
        rows: list[list[str]] = []
        keys: list[str] = []
        for w in waiters:
            index = self.keys.waiter_index(shard, w.event_name, w.match_path, w.match_key)
            paths = self.keys.waiters(shard, w.event_name) + ":paths"
            body = dumps({k: v for k, v in asdict(w).items()
                          if v is not None and k != "registered_at"})
            rows.append([index, w.member, body, paths, w.match_path or ""])
            keys.extend((index, paths) if w.match_path else (index,))
        if keys:
            self._remember_waiters(run_id, keys)
        return keys, dumps(rows)

    def _remember_waiters(self, run_id: str, keys: list[str], *, replace: bool = False) -> None:
        known = () if replace else self._waiter_keys.pop(run_id, ())
        self._waiter_keys[run_id] = tuple(dict.fromkeys((*known, *keys)))
        if len(self._waiter_keys) > WAITER_KEYS_KEPT:
            del self._waiter_keys[next(iter(self._waiter_keys))]

    def _learn_waiters(self, run_id: str, raw: Any) -> None:
        self._remember_waiters(run_id, [entry[0] for entry in json.loads(s(raw))],
                               replace=True)

    def _dropping(self, name: str, run_id: str, keys: list[str], args: list[Any]) -> Any:
        """Call a script that drops waiter entries, with the run's waiter index keys."""
        for _ in range(3):
            reply = self._scripts[name](keys=[*keys, *self._waiter_keys.get(run_id, ())],
                                        args=args)
            if not (isinstance(reply, list) and reply and s(reply[0]) == "keys"):
                return reply
            self._learn_waiters(run_id, reply[1])
        raise RuntimeError(f"the waiters of run {run_id} kept changing during {name}")

    # -- events -----------------------------------------------------------------------------
    def _event_call(self, w: EventWrite) -> tuple[list[str], list[Any]]:
        return ([self.keys.event(w.event_id), self.keys.event_timers(w.event_id)],
                [w.event_json, w.ttl_ms, w.route_at, f"e|{w.event_id}"])

    def put_event(self, event_id: str, event_json: str, *, route_at: int, ttl_ms: int) -> bool:
        keys, args = self._event_call(EventWrite(event_id, event_json, route_at, ttl_ms))
        return bool(self._scripts["put_event"](keys=keys, args=args))

    def put_events(self, writes: list[EventWrite]) -> list[bool]:
        return [bool(reply) for reply in self._script_batch(
            "put_event", [self._event_call(w) for w in writes])]

    def _script_batch(self, name: str, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Several calls of one script: pipelined on one server, one by one on a cluster
        (its pipelines take no scripts)."""
        if len(calls) == 1 or self.cluster:
            return [self._scripts[name](keys=keys, args=args) for keys, args in calls]
        self.guard.check()
        script = self._scripts[name].inner
        with self.r.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                script(keys=keys, args=args, client=pipe)
            return list(pipe.execute())

    def get_event(self, event_id: str) -> str | None:
        raw = self.r.get(self.keys.event(event_id))
        return None if raw is None else s(raw)

    def complete_routing(self, event_id: str, run_ids: list[str], *, ttl_ms: int,
                         skipped: tuple[Skip, ...] = ()) -> None:
        base = self.keys.event(event_id)
        with self.r.pipeline(transaction=False) as pipe:
            pipe.get(base + ":runs")
            pipe.get(base + ":skips")
            previous, previous_skips = pipe.execute()
        merged = json.loads(previous) if previous else []
        merged.extend(r for r in run_ids if r not in merged)
        skips = json.loads(previous_skips) if previous_skips else []
        known = {entry[0] for entry in skips}
        skips.extend([skip.function_id, skip.reason, skip.run_id] for skip in skipped
                     if skip.function_id not in known)
        self._scripts["complete_routing"](
            keys=[base + ":runs", self.keys.event_timers(event_id), base + ":skips"],
            args=[dumps(merged), ttl_ms, f"e|{event_id}", dumps(skips) if skips else ""])

    def skipped_starts(self, event_id: str) -> list[Skip]:
        raw = self.r.get(self.keys.event(event_id) + ":skips")
        return [Skip(*entry) for entry in json.loads(raw)] if raw else []

    def routed_runs(self, event_id: str) -> list[str] | None:
        raw = self.r.get(self.keys.event(event_id) + ":runs")
        return None if raw is None else list(json.loads(raw))

    # -- runs -------------------------------------------------------------------------------
    def create_run(self, run: NewRun) -> bool:
        rk = self.keys.run_keys(run.id)
        if run.pending:
            self._open_pending(run.pending, run.id, run.created_at)
        waiter_keys, waiters = self._waiters_arg(run.id, run.waiters)
        shard = self.keys.shard_of(run.id)
        created = int(self._scripts["create_run"](
            keys=[rk.meta, rk.fns, self.keys.fn_index(shard, run.function_id), rk.timers,
                  rk.events, rk.eids, *rk.statuses, *waiter_keys],
            args=[run.id, run.function_id, run.created_at,
                  "" if run.event_ids == [e.get("id") for e in run.events]
                  else dumps(run.event_ids),
                  dumps([_compact(e) for e in run.events]),
                  dumps(run.parent) if run.parent else "",
                  run.start_by if run.start_by is not None else "",
                  waiters, self._member(run.function_id, run.id),
                  dumps(run.deadlines) if run.deadlines else "",
                  dump_concurrency(run.concurrency),
                  run.pending or "", dumps(run.event_ids) if run.pending else "",
                  dump_throttle(run.throttle), run.priority_ms or "", run.trace or ""]))
        return bool(created)

    def load_run(self, run_id: str) -> RunRecord | None:
        rk = self.keys.run_keys(run_id)
        reply = self._scripts["load_run"].inner(keys=[rk.meta, rk.steps, rk.events])
        return record_of(run_id, pairs(reply[0]), pairs(reply[1]), reply[2]) if reply else None

    @staticmethod
    def _member(function_id: str, run_id: str) -> str:
        return f"r|{function_id}|{run_id}"

    def acquire(self, run_id: str, holder: str, *, function_id: str, now: int,
                lease_ms: int) -> tuple[AcquireStatus, RunRecord | None]:
        rk = self.keys.run_keys(run_id)
        keys = [rk.meta, rk.steps, rk.timers, rk.events, *rk.statuses]
        member = self._member(function_id, run_id)
        args: list[Any] = [holder, now, lease_ms, run_id, "", "", function_id, ""]
        places: list[ConcurrencyGate] | None = None
        for _ in range(4):
            reply = self._scripts["acquire"](keys=keys, args=args)
            status = s(reply[0])
            if status == "busy" and not args[5]:
                current = s(reply[1])
                ttl = int(self.r.pttl(self.keys.proc(proc_of(current))))
                if ttl >= 0:  # alive: look again soon (its heartbeat pushes this back)
                    due = now + min(ttl, BUSY_RECHECK_MS) + BUSY_MARGIN_MS
                    self.r.zadd(rk.timers, {member: due}, lt=True)
                    return "busy", None
                args[5] = current  # its process is dead: take the run over
            elif status == "gates" and places is None:
                places, wait = self._take_places(reply, member, now, lease_ms)
                if wait is not None:
                    self.schedule(member, now + wait)
                    return "limited", None
                args[7] = "1"  # its places are taken: now the run itself
            else:
                break
        if places and status not in ("ok", "busy"):  # (busy: the places are its holder's)
            self._free_places(places, member, now)
        if len(reply) < 4:
            return status, None  # type: ignore[return-value]
        if len(reply) > 4 and reply[4]:
            self._close_pending(s(reply[4]), run_id)
        meta = pairs(reply[1])
        if b"waiters" in meta:
            self._learn_waiters(run_id, meta[b"waiters"])
        return status, record_of(run_id, meta, pairs(reply[2]), reply[3])  # type: ignore[return-value]

    def renew(self, run_id: str, holder: str, *, now: int, lease_ms: int,
              running: tuple[str, int] | None = None) -> bool:
        rk = self.keys.run_keys(run_id)
        reply = self._scripts["renew"](
            keys=[rk.meta, rk.timers],
            args=[holder, now + lease_ms, run_id,
                  "" if running is None else f"{running[1]}|{running[0]}"])
        if not isinstance(reply, list):
            return False
        self._renew_places(reply[0], reply[1], now + lease_ms)
        return True

    def begin_wait(self, run_id: str, holder: str, step_key: str, state: dict[str, Any],
                   waiters: tuple[Waiter, ...]) -> bool:
        rk = self.keys.run_keys(run_id)
        waiter_keys, arg = self._waiters_arg(run_id, waiters)
        return bool(self._scripts["begin_wait"](
            keys=[rk.meta, rk.steps, *waiter_keys],
            args=[holder, step_key, dumps(state), arg]))

    def save_step(self, run_id: str, holder: str, step_key: str,
                  state: dict[str, Any]) -> tuple[SaveStatus, dict[str, Any] | None]:
        rk = self.keys.run_keys(run_id)
        reply = self._scripts["save_step"](keys=[rk.meta, rk.steps],
                                           args=[holder, step_key, dumps(state)])
        status = s(reply[0])
        existing = json.loads(reply[1]) if len(reply) > 1 else None
        return status, existing  # type: ignore[return-value]

    def suspend(self, run_id: str, holder: str, suspension: Suspension) -> bool | None:
        rk = self.keys.run_keys(run_id)
        sp = suspension
        waiter_keys, waiters = self._waiters_arg(run_id, sp.waiters)
        reply = self._scripts["suspend"](
            keys=[rk.meta, rk.steps, rk.timers, *rk.statuses, *waiter_keys],
            args=[holder, sp.status, "" if sp.wake_at is None else sp.wake_at,
                  sp.step_key or "",
                  dumps(sp.step_state) if sp.step_state is not None else "",
                  "" if sp.attempt is None else sp.attempt, waiters,
                  run_id, uuid.uuid4().hex[:8]])
        if isinstance(reply, list):  # let go: free its places
            self._after_let_go(reply[1], reply[2], None)
            return False
        return None if reply == -1 else bool(reply)

    def _end_keys(self, run_id: str) -> list[str]:
        rk = self.keys.run_keys(run_id)
        return [rk.meta, rk.steps, rk.timers, rk.events, rk.eids, rk.done, *rk.statuses]

    def finish(self, run_id: str, holder: str, outcome: Outcome, *, retention_ms: int) -> bool:
        reply = self._dropping(
            "finish", run_id, self._end_keys(run_id),
            [holder, outcome.status, outcome.ended_at, outcome.output_json or "",
             dumps(outcome.error) if outcome.error else "", retention_ms, run_id,
             outcome.ended_at + NOTIFY_SAFETY_MS])
        if not isinstance(reply, list):
            return False
        self._waiter_keys.pop(run_id, None)
        self._after_let_go(reply[1], reply[2], outcome.ended_at)
        return True

    def wait_ended(self, run_id: str, timeout: float) -> None:
        # non-destructive: the element is moved to where it was, so every waiter sees it
        done = self.keys.run_keys(run_id).done
        block = max(0.01, min(timeout, self._block_s))  # the caller looks again after it
        self.r.blmove(done, done, block, "RIGHT", "LEFT")  # type: ignore[arg-type]

    def notified(self, run_id: str) -> None:
        rk = self.keys.run_keys(run_id)
        self._scripts["notified"](keys=[rk.meta, rk.timers], args=[run_id])

    def release(self, run_id: str, holder: str) -> None:
        reply = self._scripts["release"](keys=[self.keys.run(run_id)], args=[holder, run_id])
        if isinstance(reply, list):
            self._after_let_go(reply[0], reply[1], None)

    def cancel(self, run_id: str, *, now: int, reason: str, retention_ms: int) -> str | None:
        reply = self._dropping(
            "cancel", run_id, self._end_keys(run_id),
            [now, dumps({"name": "Cancelled", "message": reason}), retention_ms, run_id,
             now + NOTIFY_SAFETY_MS])
        if not reply:
            return None
        if len(reply) > 1:  # cancelled now: free its places, leave the queues it waits in
            self._waiter_keys.pop(run_id, None)
            self._after_let_go(reply[1], reply[3], now)
            self._leave_throttle(reply[2], reply[3])
        return s(reply[0])

    def acquire_branch(self, run_id: str, step_key: str, holder: str, *,
                       function_id: str) -> tuple[AcquireStatus, RunRecord | None, int]:
        rk = self.keys.run_keys(run_id)
        keys = [rk.meta, rk.steps, rk.events]
        reply = self._scripts["acquire_branch"](keys=keys,
                                                args=[step_key, holder, "", function_id])
        if s(reply[0]) == "busy":
            current = s(reply[1])
            if self.r.exists(self.keys.proc(proc_of(current))):
                return "busy", None, 0
            reply = self._scripts["acquire_branch"](
                keys=keys, args=[step_key, holder, current, function_id])
        status = s(reply[0])
        if status != "ok":
            return status, None, 0  # type: ignore[return-value]
        record = record_of(run_id, pairs(reply[1]), pairs(reply[2]), reply[3])
        return "ok", record, int(reply[4])

    def release_branch(self, run_id: str, step_key: str, holder: str) -> None:
        self._scripts["release_branch"](keys=[self.keys.run(run_id)], args=[step_key, holder])

    def resolve_step(self, run_id: str, step_key: str, state: dict[str, Any], *,
                     wake_at: int, wake: bool = True) -> bool:
        rk = self.keys.run_keys(run_id)
        for _ in range(10):  # compare-and-set; retried only if the state changed meanwhile
            with self.r.pipeline(transaction=False) as pipe:  # one slot: one round trip
                pipe.hget(rk.steps, step_key)
                pipe.hget(rk.meta, "waiters")
                raw, waiters = pipe.execute()
            if waiters:
                self._learn_waiters(run_id, waiters)
            current = json.loads(raw) if raw else {}
            reply = self._dropping(
                "resolve_step", run_id, [rk.meta, rk.steps, rk.timers],
                [step_key, s(raw) if raw else "", dumps({**current, **state}), wake_at,
                 "1" if wake else "0", run_id, f"{run_id}|{step_key}"])
            if reply != -1:
                return bool(reply)
        return False

    def close(self) -> None:
        self.close_signals()
        if self._held is not None:
            self._held.close()
        self.r.close()
