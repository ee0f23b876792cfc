"""The production store: Redis, with a Lua script wherever several keys change together.

Key layout (every key starts with the namespace, ``steps_namespace``, default
``celery_steps``; the keys of one run share the ``{run_id}`` hash tag so a future Redis
Cluster keeps them in one slot):

==============================================  ======  =========================================
key                                             type    content
==============================================  ======  =========================================
``<ns>:evt:<event_id>``                         string  ``{"received_at", "event"}`` (stamped
                                                        with Redis TIME); expires after the
                                                        dedupe window (24 h), or that long
                                                        after a delayed event is due: SET NX
``<ns>:evt:<event_id>:runs``                    string  JSON run ids the event started (routed)
``<ns>:evt:<event_id>:skips``                   string  JSON ``[function, reason, run id]``: the
                                                        functions it matched that started no
                                                        run, and why (as long as ``:runs``)
``<ns>:run:{<run_id>}``                         hash    run metadata: function_id, status,
                                                        created_at, ended_at,
                                                        output, error, attempt, parent, wake,
                                                        deadlines (Timeouts, absolute ms),
                                                        waiters (index entries to drop on end),
                                                        holder (``token@proc`` executing it),
                                                        crashes (dead holders since progress),
                                                        sop (last suspend's op id:result),
                                                        notify (the end's outbox is pending),
                                                        trace (W3C traceparent, when tracing),
                                                        cur (``<since>|<step>``: the step.run
                                                        executing, as of its last heartbeat),
                                                        b:<step> (a parallel branch's holder),
                                                        conc (its concurrency gates, JSON),
                                                        thr (its throttle gate, until it
                                                        starts), prio (priority ms), st (it
                                                        went through its gates once)
``<ns>:run:{<run_id>}:steps``                   hash    step key -> step state JSON
``<ns>:run:{<run_id>}:events``                  string  the triggering events (JSON list); kept
                                                        out of the metadata hash so that hash
                                                        stays a compact listpack
``<ns>:run:{<run_id>}:done``                    list    pushed when the run ends (wait_for_run
                                                        blocks on it)
``<ns>:run:{<run_id>}:eids``                    set     event ids a debounce/batch run collected
``<ns>:proc:<proc>``                            string  a live worker process (PX lease TTL),
                                                        refreshed by its heartbeat: the timer
                                                        members of the runs it holds (JSON)
``<ns>:procs:<host>``                           set     the processes of a host that beat for
                                                        themselves (a worker on the host reaps
                                                        the dead ones)
``<ns>:task:<task_id>``                         string  a ``run_task`` task a worker started
                                                        (expires after the run retention)
``<ns>:runs:fns``                               set     function ids that have runs
``<ns>:runs:fn:<function_id>``                  zset    run id scored by created_at, per function
                                                        (listing all runs merges these)
``<ns>:functions``                              set     function ids served on this store
``<ns>:gate:conc:{fn:<fn>:<key>}``              zset    runs holding a concurrency place, scored
                                                        by lease expiry (``{env:<key>}``: a
                                                        limit shared by functions); with
                                                        ``:q``, ``:qx``, ``:qn``, its waiting
                                                        queue (see ``store/redis_gates.py``)
``<ns>:gate:rate:<fn>:<key>``                   zset    rate-limit window (admission times)
``<ns>:gate:throttle:{fn:<fn>:<key>}``          string  throttle's theoretical arrival time;
                                                        with ``:q``, ``:qx``, ``:qn``, its queue
``<ns>:gate:single:<fn>:<key>``                 string  the singleton's active run id and when
                                                        it was claimed (``<run>|<ms>``)
``<ns>:gate:pend:<fn>:<key>``                   string  the queued run collecting a debounce or
                                                        batch's events (deleted when it starts)
``<ns>:timers``                                 zset    timer member scored by due time (ms)
``<ns>:timers:signal``                          list    one element pokes a blocked poller
``<ns>:w:<event_name>``                         hash    waiters without ``match``: member ->
                                                        ``<registered_at>|<JSON>`` (Redis TIME)
``<ns>:w:<event_name>:m:<path>=<value>``        hash    waiters whose ``match`` path has value
``<ns>:w:<event_name>:paths``                   set     match paths in use for that event name
==============================================  ======  =========================================

What expires: ended runs (every key of the run) after ``steps_run_retention``; events after
the dedupe window (past their due time when delayed); routing records with their event;
process keys after ``steps_lease_ttl`` unless beaten; rate and throttle gates after their
period; ``run_task`` start marks after the retention. What is trimmed: the per-function run
indexes, by a timer poller's sweep every 10 minutes (entries of runs that expired), and the
host process registries, when a worker reaps a dead process. What stays, bounded by the code
rather than by the data: the function sets, the one-element timer signal, and per event
name the set of ``match`` paths in use (``tests/store/test_growth.py`` checks it).
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from importlib import resources
from typing import Any
from urllib.parse import urlparse

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel

from celery_steps.errors import ConfigurationError
from celery_steps.expressions import MISSING, lookup_path, match_key
from celery_steps.store.base import (
    BUSY_MARGIN_MS,
    BUSY_RECHECK_MS,
    NOTIFY_SAFETY_MS,
    AcquireStatus,
    ConcurrencyGate,
    EventWrite,
    GateTaken,
    NewRun,
    Outcome,
    RunRecord,
    SaveStatus,
    Skip,
    StateStore,
    Suspension,
    Waiter,
    proc_host,
    proc_of,
)
from celery_steps.store.redis_gates import (
    GATE_SCRIPTS,
    RedisGates,
    dump_concurrency,
    dump_throttle,
)
from celery_steps.store.redis_guard import EvictionGuard, GuardedScript

SCRIPTS = ("put_event", "complete_routing", "create_run", "acquire", "renew", "save_step",
           "suspend", "finish", "notified", "release", "cancel", "resolve_step", "claim_due",
           "ack_timers", "acquire_branch", "release_branch", "begin_wait", *GATE_SCRIPTS)


def _load_scripts() -> dict[str, str]:
    folder = resources.files("celery_steps.store") / "lua"
    lib = (folder / "lib.lua").read_text()
    return {name: lib + "\n" + (folder / f"{name}.lua").read_text() for name in SCRIPTS}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _compact(event: dict[str, Any]) -> dict[str, Any]:
    """An event as stored with a run: null fields left out (the model restores them)."""
    return {k: v for k, v in event.items() if v is not None}


def sentinel_client(url: str, options: dict[str, Any],
                    resilient: dict[str, Any]) -> redis.Redis:
    """A client of the master that Sentinel names, following it through failovers.

    ``url`` is Celery's form, ``sentinel://[:password@]host:port[/db]``, several joined by
    ``;``; ``options`` are Celery's transport options: ``master_name`` (required),
    ``sentinel_kwargs`` (for the sentinels themselves), and connection options such as
    ``password`` or ``ssl``."""
    master = options.pop("master_name", None)
    if not master:
        raise ConfigurationError(
            "a sentinel:// store URL needs the name of the master: set "
            "steps_store_transport_options = {'master_name': 'mymaster'} (Celery's "
            "broker_transport_options are used when the store is the broker)")
    hosts: list[tuple[str, int]] = []
    db, password = 0, None
    for part in url.split(";"):
        parsed = urlparse(part.strip())
        if parsed.scheme != "sentinel" or not parsed.hostname:
            raise ConfigurationError(
                f"invalid sentinel URL {part.strip()!r}: use sentinel://host:26379, several "
                "joined by ';'")
        hosts.append((parsed.hostname, parsed.port or 26379))
        password = parsed.password or password
        if parsed.path.strip("/").isdigit():
            db = int(parsed.path.strip("/"))
    sentinel_kwargs = options.pop("sentinel_kwargs", None) or {}
    options.setdefault("password", password)
    sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, **{  # type: ignore[no-untyped-call]
        k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")})
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        master, db=db, **resilient, **options)
    return client


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: list[Any]) -> dict[Any, Any]:
    """A Lua HGETALL reply (a flat list) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _running(raw: str | None) -> tuple[str, int] | None:
    """The run hash's ``cur``: ``<since ms>|<step key>`` of the step executing now."""
    if not raw:
        return None
    since, _, key = raw.partition("|")
    return key, int(since)


def _waiter(raw: bytes | str) -> Waiter:
    """A waiter index entry: ``<registered_at ms>|<waiter JSON>``."""
    stamp, _, body = _s(raw).partition("|")
    return Waiter(**{**json.loads(body), "registered_at": int(stamp)})


class RedisStore(RedisGates, StateStore):
    """:class:`StateStore` on Redis. One instance per process (re-created after fork)."""

    def __init__(self, client: redis.Redis, *, namespace: str = "celery_steps",
                 check_policy: bool = True) -> None:
        self.r = client
        self.ns = namespace
        self.guard = EvictionGuard(client)
        if not check_policy:
            self.guard.recheck_s = math.inf
        self._scripts = {name: GuardedScript(client.register_script(src), self.guard)
                         for name, src in _load_scripts().items()}
        self.timers_key = f"{namespace}:timers"
        self.signal_key = f"{namespace}:timers:signal"
        if check_policy:
            self.guard.check()

    @classmethod
    def from_url(cls, url: str, *, namespace: str = "celery_steps",
                 options: Mapping[str, Any] | None = None) -> RedisStore:
        """A store on ``url``. Every client retries a dropped connection (a restart, a
        failover) for about 15 s; each script is safe to run twice, so a retry after a
        lost reply changes nothing."""
        resilient: dict[str, Any] = {
            "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=20),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError],
            "health_check_interval": 30,
        }
        if url.startswith("sentinel://"):
            return cls(sentinel_client(url, dict(options or {}), resilient), namespace=namespace)
        if url.startswith("redis+socket://"):
            url = "unix://" + url[len("redis+socket://"):]
        return cls(redis.Redis.from_url(url, **resilient), namespace=namespace)

    # -- keys -----------------------------------------------------------------------------
    def run_key(self, run_id: str) -> str:
        return f"{self.ns}:run:{{{run_id}}}"

    def _run_keys(self, run_id: str) -> tuple[str, str, str, str]:
        """The run's metadata hash, steps hash, events and collected event ids."""
        base = self.run_key(run_id)
        return base, base + ":steps", base + ":events", base + ":eids"

    def _proc_key(self, proc: str) -> str:
        return f"{self.ns}:proc:{proc}"

    def _event_key(self, event_id: str) -> str:
        return f"{self.ns}:evt:{event_id}"

    def _waiter_index(self, event_name: str, path: str | None, wanted: str | None) -> str:
        base = f"{self.ns}:w:{event_name}"
        if path is None:
            return base
        if wanted is not None and len(wanted) > 64:
            wanted = "sha1:" + hashlib.sha1(wanted.encode()).hexdigest()
        return f"{base}:m:{path}={wanted}"

    def _waiters_arg(self, waiters: tuple[Waiter, ...]) -> str:
        return _dumps([
            [self._waiter_index(w.event_name, w.match_path, w.match_key), w.member,
             _dumps({k: v for k, v in asdict(w).items() if v is not None and k != "registered_at"}),
             f"{self.ns}:w:{w.event_name}:paths", w.match_path or ""]
            for w in waiters
        ])

    @staticmethod
    def _member(function_id: str, run_id: str) -> str:
        return f"r|{function_id}|{run_id}"

    # -- events -----------------------------------------------------------------------------
    def put_event(self, event_id: str, event_json: str, *, route_at: int, ttl_ms: int) -> bool:
        return bool(self._scripts["put_event"](
            keys=[self._event_key(event_id), self.timers_key, self.signal_key],
            args=[event_json, ttl_ms, route_at, f"e|{event_id}"]))

    def put_events(self, writes: list[EventWrite]) -> list[bool]:
        if len(writes) == 1:
            w = writes[0]
            return [self.put_event(w.event_id, w.event_json, route_at=w.route_at,
                                   ttl_ms=w.ttl_ms)]
        self.guard.check()
        script = self._scripts["put_event"].inner
        with self.r.pipeline(transaction=False) as pipe:
            for w in writes:
                script(keys=[self._event_key(w.event_id), self.timers_key, self.signal_key],
                       args=[w.event_json, w.ttl_ms, w.route_at, f"e|{w.event_id}"],
                       client=pipe)
            return [bool(reply) for reply in pipe.execute()]

    def get_event(self, event_id: str) -> str | None:
        raw = self.r.get(self._event_key(event_id))
        return None if raw is None else _s(raw)

    def complete_routing(self, event_id: str, run_ids: list[str], *, ttl_ms: int,
                         skipped: tuple[Skip, ...] = ()) -> None:
        key = self._event_key(event_id) + ":runs"
        with self.r.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.get(key[:-5] + ":skips")
            previous, previous_skips = pipe.execute()
        merged = json.loads(previous) if previous else []
        merged.extend(r for r in run_ids if r not in merged)
        skips = json.loads(previous_skips) if previous_skips else []
        known = {entry[0] for entry in skips}
        skips.extend([s.function_id, s.reason, s.run_id] for s in skipped
                     if s.function_id not in known)
        self._scripts["complete_routing"](
            keys=[key, self.timers_key, key[:-5] + ":skips"],
            args=[_dumps(merged), ttl_ms, f"e|{event_id}", _dumps(skips) if skips else ""])

    def skipped_starts(self, event_id: str) -> list[Skip]:
        raw = self.r.get(self._event_key(event_id) + ":skips")
        return [Skip(*entry) for entry in json.loads(raw)] if raw else []

    def routed_runs(self, event_id: str) -> list[str] | None:
        raw = self.r.get(self._event_key(event_id) + ":runs")
        return None if raw is None else list(json.loads(raw))

    # -- runs -------------------------------------------------------------------------------
    def create_run(self, run: NewRun) -> bool:
        meta_key, _, events_key, eids_key = self._run_keys(run.id)
        created = int(self._scripts["create_run"](
            keys=[meta_key, f"{self.ns}:runs:fns",
                  f"{self.ns}:runs:fn:{run.function_id}", self.timers_key, self.signal_key,
                  events_key, eids_key],
            args=[run.id, run.function_id, run.created_at,
                  "" if run.event_ids == [e.get("id") for e in run.events]
                  else _dumps(run.event_ids),
                  _dumps([_compact(e) for e in run.events]),
                  _dumps(run.parent) if run.parent else "",
                  run.start_by if run.start_by is not None else "",
                  self._waiters_arg(run.waiters), self._member(run.function_id, run.id),
                  _dumps(run.deadlines) if run.deadlines else "",
                  dump_concurrency(run.concurrency),
                  run.pending or "", _dumps(run.event_ids) if run.pending else "",
                  dump_throttle(run.throttle), run.priority_ms or "", run.trace or ""]))
        if created < 0:
            raise GateTaken(run.pending)
        return bool(created)

    def load_run(self, run_id: str) -> RunRecord | None:
        meta_key, steps_key, events_key, _ = self._run_keys(run_id)
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hgetall(meta_key)
            pipe.hgetall(steps_key)
            pipe.get(events_key)
            meta, steps, events = pipe.execute()
        return self._record(run_id, meta, steps, events) if meta else None

    @staticmethod
    def _record(run_id: str, meta: dict[bytes, bytes], steps: dict[bytes, bytes],
                events: bytes | str | None) -> RunRecord:
        m = {_s(k): _s(v) for k, v in meta.items()}
        event_list = json.loads(events or "[]")
        return RunRecord(
            id=run_id,
            function_id=m["function_id"],
            status=m["status"],
            created_at=int(m["created_at"]),
            event_ids=(json.loads(m["event_ids"]) if "event_ids" in m
                       else [e.get("id") for e in event_list]),
            ended_at=int(m["ended_at"]) if m.get("ended_at") else None,
            output=json.loads(m["output"]) if "output" in m else None,
            error=json.loads(m["error"]) if "error" in m else None,
            attempt=int(m.get("attempt", 0)),
            parent=json.loads(m["parent"]) if "parent" in m else None,
            deadlines=json.loads(m["deadlines"]) if "deadlines" in m else {},
            crashes=int(m.get("crashes", 0)),
            notify=m.get("notify") == "1",
            events=event_list,
            steps={_s(k): json.loads(v) for k, v in steps.items()},
            state_bytes=len(events or b"") + sum(len(v) for v in steps.values()),
            trace=m.get("trace"),
            running_step=_running(m.get("cur")),
        )

    def list_runs(self, *, function_id: str | None, status: str | None, limit: int,
                  before: tuple[int, str] | None = None) -> list[RunRecord]:
        if function_id is not None:
            indexes = [f"{self.ns}:runs:fn:{function_id}"]
        else:
            indexes = sorted(f"{self.ns}:runs:fn:{_s(f)}"
                             for f in self.r.smembers(f"{self.ns}:runs:fns"))
        top: int | str = "+inf" if before is None else before[0]
        found: list[RunRecord] = []
        seen: set[str] = set()
        depth = max(limit, 100)
        while True:
            # the newest `depth` of every function index at or below the cursor, newest first
            with self.r.pipeline(transaction=False) as pipe:
                for index in indexes:
                    pipe.zrevrangebyscore(index, top, "-inf", start=0, num=depth,
                                          withscores=True)
                pages = pipe.execute()
            merged = sorted(((int(score), _s(run_id), index) for index, page in zip(
                indexes, pages, strict=True) for run_id, score in page), reverse=True)
            for created_at, run_id, index in merged:
                if run_id in seen or (before is not None and (created_at, run_id) >= before):
                    continue
                seen.add(run_id)
                record = self.load_run(run_id)
                if record is None:
                    self.r.zrem(index, run_id)  # expired after the retention: trim lazily
                elif status is None or record.status == status:
                    found.append(record)
                    if len(found) >= limit:
                        return found
            if all(len(page) < depth for page in pages) or depth >= 20_000:
                return found
            depth *= 4

    def acquire(self, run_id: str, holder: str, *, function_id: str, now: int,
                lease_ms: int) -> tuple[AcquireStatus, RunRecord | None]:
        meta_key, steps_key, events_key, _ = self._run_keys(run_id)
        keys = [meta_key, steps_key, self.timers_key, self.signal_key, events_key]
        member = self._member(function_id, run_id)
        args: list[Any] = [holder, now, lease_ms, run_id, "", "", function_id, ""]
        places: list[ConcurrencyGate] | None = None
        for _ in range(4):
            reply = self._scripts["acquire"](keys=keys, args=args)
            status = _s(reply[0])
            if status == "busy" and not args[5]:
                current = _s(reply[1])
                ttl = int(self.r.pttl(self._proc_key(proc_of(current))))
                if ttl >= 0:  # alive: look again soon (its heartbeat pushes this back)
                    due = now + min(ttl, BUSY_RECHECK_MS) + BUSY_MARGIN_MS
                    self.r.zadd(self.timers_key, {member: due}, lt=True)
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
        return status, self._record(run_id, _pairs(reply[1]), _pairs(reply[2]),  # type: ignore[return-value]
                                    reply[3])

    def renew(self, run_id: str, holder: str, *, now: int, lease_ms: int,
              running: tuple[str, int] | None = None) -> bool:
        reply = self._scripts["renew"](
            keys=[self.run_key(run_id), self.timers_key],
            args=[holder, now + lease_ms, run_id,
                  "" if running is None else f"{running[1]}|{running[0]}"])
        if not isinstance(reply, list):
            return False
        self._renew_places(reply[0], reply[1], now + lease_ms)
        return True

    def _host_key(self, host: str) -> str:
        return f"{self.ns}:procs:{host}"

    def beat(self, proc: str, *, ttl_ms: int, holding: list[str] | None = None) -> None:
        key = self._proc_key(proc)
        if holding is None:
            self.r.pexpire(key, ttl_ms)
            return
        with self.r.pipeline(transaction=False) as pipe:
            pipe.set(key, _dumps(holding), px=ttl_ms)
            pipe.sadd(self._host_key(proc_host(proc)), proc)
            pipe.execute()

    def reap(self, proc: str) -> None:
        key = self._proc_key(proc)
        raw = self.r.get(key)
        held = json.loads(raw) if raw else []
        with self.r.pipeline(transaction=False) as pipe:
            if held:  # wake its runs now: they are taken over at once
                pipe.zadd(self.timers_key, dict.fromkeys(held, 0))
                pipe.lpush(self.signal_key, "1")
                pipe.ltrim(self.signal_key, 0, 0)
            pipe.delete(key)
            pipe.srem(self._host_key(proc_host(proc)), proc)
            pipe.execute()

    def host_procs(self, host: str) -> list[str]:
        return sorted(_s(p) for p in self.r.smembers(self._host_key(host)))

    def begin_wait(self, run_id: str, holder: str, step_key: str, state: dict[str, Any],
                   waiters: tuple[Waiter, ...]) -> bool:
        meta_key, steps_key, _, _ = self._run_keys(run_id)
        return bool(self._scripts["begin_wait"](
            keys=[meta_key, steps_key],
            args=[holder, step_key, _dumps(state), self._waiters_arg(waiters)]))

    def save_step(self, run_id: str, holder: str, step_key: str,
                  state: dict[str, Any]) -> tuple[SaveStatus, dict[str, Any] | None]:
        meta_key, steps_key, _, _ = self._run_keys(run_id)
        reply = self._scripts["save_step"](keys=[meta_key, steps_key],
                                           args=[holder, step_key, _dumps(state)])
        status = _s(reply[0])
        existing = json.loads(reply[1]) if len(reply) > 1 else None
        return status, existing  # type: ignore[return-value]

    def suspend(self, run_id: str, holder: str, suspension: Suspension) -> bool | None:
        meta_key, steps_key, _, _ = self._run_keys(run_id)
        s = suspension
        reply = self._scripts["suspend"](
            keys=[meta_key, steps_key, self.timers_key, self.signal_key],
            args=[holder, s.status, "" if s.wake_at is None else s.wake_at, s.step_key or "",
                  _dumps(s.step_state) if s.step_state is not None else "",
                  "" if s.attempt is None else s.attempt, self._waiters_arg(s.waiters),
                  run_id, uuid.uuid4().hex[:8]])
        if isinstance(reply, list):  # let go: free its places
            self._after_let_go(reply[1], reply[2], None)
            return False
        return None if reply == -1 else bool(reply)

    def finish(self, run_id: str, holder: str, outcome: Outcome, *, retention_ms: int) -> bool:
        meta_key, steps_key, events_key, eids_key = self._run_keys(run_id)
        reply = self._scripts["finish"](
            keys=[meta_key, steps_key, self.timers_key, self.signal_key, events_key, eids_key,
                  meta_key + ":done"],
            args=[holder, outcome.status, outcome.ended_at, outcome.output_json or "",
                  _dumps(outcome.error) if outcome.error else "", retention_ms, run_id,
                  outcome.ended_at + NOTIFY_SAFETY_MS])
        if not isinstance(reply, list):
            return False
        self._after_let_go(reply[1], reply[2], outcome.ended_at)
        return True

    def wait_ended(self, run_id: str, timeout: float) -> None:
        # non-destructive: the element is moved to where it was, so every waiter sees it
        done = self.run_key(run_id) + ":done"
        self.r.blmove(done, done, max(0.01, timeout), "RIGHT", "LEFT")  # type: ignore[arg-type]

    def notified(self, run_id: str) -> None:
        self._scripts["notified"](keys=[self.run_key(run_id), self.timers_key], args=[run_id])

    def release(self, run_id: str, holder: str) -> None:
        reply = self._scripts["release"](keys=[self.run_key(run_id)], args=[holder, run_id])
        if isinstance(reply, list):
            self._after_let_go(reply[0], reply[1], None)

    def cancel(self, run_id: str, *, now: int, reason: str, retention_ms: int) -> str | None:
        meta_key, steps_key, events_key, eids_key = self._run_keys(run_id)
        reply = self._scripts["cancel"](
            keys=[meta_key, steps_key, self.timers_key, self.signal_key, events_key, eids_key,
                  meta_key + ":done"],
            args=[now, _dumps({"name": "Cancelled", "message": reason}), retention_ms, run_id,
                  now + NOTIFY_SAFETY_MS])
        if not reply:
            return None
        if len(reply) > 1:  # cancelled now: free its places, leave the queues it waits in
            self._after_let_go(reply[1], reply[3], now)
            self._leave_throttle(reply[2], reply[3])
        return _s(reply[0])

    def acquire_branch(self, run_id: str, step_key: str, holder: str, *,
                       function_id: str) -> tuple[AcquireStatus, RunRecord | None, int]:
        meta_key, steps_key, events_key, _ = self._run_keys(run_id)
        keys = [meta_key, steps_key, events_key]
        reply = self._scripts["acquire_branch"](keys=keys,
                                                args=[step_key, holder, "", function_id])
        if _s(reply[0]) == "busy":
            current = _s(reply[1])
            if self.r.exists(self._proc_key(proc_of(current))):
                return "busy", None, 0
            reply = self._scripts["acquire_branch"](
                keys=keys, args=[step_key, holder, current, function_id])
        status = _s(reply[0])
        if status != "ok":
            return status, None, 0  # type: ignore[return-value]
        record = self._record(run_id, _pairs(reply[1]), _pairs(reply[2]), reply[3])
        return "ok", record, int(reply[4])

    def release_branch(self, run_id: str, step_key: str, holder: str) -> None:
        self._scripts["release_branch"](keys=[self.run_key(run_id)], args=[step_key, holder])

    def resolve_step(self, run_id: str, step_key: str, state: dict[str, Any], *,
                     wake_at: int, wake: bool = True) -> bool:
        meta_key, steps_key, _, _ = self._run_keys(run_id)
        for _ in range(10):  # compare-and-set; retried only if the state changed meanwhile
            raw = self.r.hget(steps_key, step_key)
            current = json.loads(raw) if raw else {}
            reply = self._scripts["resolve_step"](
                keys=[meta_key, steps_key, self.timers_key, self.signal_key],
                args=[step_key, _s(raw) if raw else "", _dumps({**current, **state}), wake_at,
                      "1" if wake else "0", run_id, f"{run_id}|{step_key}"])
            if reply != -1:
                return bool(reply)
        return False

    def note_task_started(self, task_id: str, *, ttl_ms: int) -> None:
        self.r.set(f"{self.ns}:task:{task_id}", "1", px=ttl_ms)

    def task_started(self, task_id: str) -> bool:
        return bool(self.r.exists(f"{self.ns}:task:{task_id}"))

    # -- functions --------------------------------------------------------------------------
    def register_functions(self, function_ids: list[str]) -> None:
        if function_ids:
            self.r.sadd(f"{self.ns}:functions", *function_ids)

    def known_function(self, function_id: str) -> bool:
        return bool(self.r.sismember(f"{self.ns}:functions", function_id))

    # -- waiters ----------------------------------------------------------------------------
    def find_waiters(self, event_name: str, event: dict[str, Any]) -> list[Waiter]:
        base = f"{self.ns}:w:{event_name}"
        with self.r.pipeline(transaction=False) as pipe:
            pipe.hgetall(base)
            pipe.smembers(base + ":paths")
            plain, paths = pipe.execute()
        buckets = [plain]
        keys = []
        for raw_path in paths:
            path = _s(raw_path)
            value = lookup_path(event, path)
            if value is not MISSING:
                keys.append(self._waiter_index(event_name, path, match_key(value)))
        if keys:
            with self.r.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(key)
                buckets.extend(pipe.execute())
        return [_waiter(raw) for bucket in buckets for raw in bucket.values()]

    # -- timers -----------------------------------------------------------------------------
    def schedule(self, member: str, due: int) -> None:
        with self.r.pipeline(transaction=True) as pipe:
            pipe.zadd(self.timers_key, {member: due})
            pipe.lpush(self.signal_key, "1")
            pipe.ltrim(self.signal_key, 0, 0)
            pipe.execute()

    def unschedule(self, member: str) -> None:
        self.r.zrem(self.timers_key, member)

    def claim_due(self, *, now: int, limit: int, redo_ms: int) -> list[tuple[str, int]]:
        members, score = self._scripts["claim_due"](keys=[self.timers_key],
                                                     args=[now, limit, redo_ms])
        return [(_s(m), int(float(_s(score)))) for m in members]

    def ack_timers(self, claimed: list[tuple[str, int]]) -> None:
        args: list[Any] = []
        for member, score in claimed:
            args.extend((member, score))
        self._scripts["ack_timers"](keys=[self.timers_key], args=args)

    def next_due(self) -> int | None:
        first = self.r.zrange(self.timers_key, 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    def wait_for_signal(self, timeout: float) -> None:
        self.r.blpop([self.signal_key], timeout=max(0.001, timeout))

    def signal(self) -> None:
        with self.r.pipeline(transaction=True) as pipe:
            pipe.lpush(self.signal_key, "1")
            pipe.ltrim(self.signal_key, 0, 0)
            pipe.execute()

    # -- housekeeping -----------------------------------------------------------------------
    def sweep(self, *, now: int, older_than_ms: int, limit: int) -> int:
        functions_key = f"{self.ns}:runs:fns"
        dropped = 0
        for raw in self.r.smembers(functions_key):
            function_id = _s(raw)
            index = f"{self.ns}:runs:fn:{function_id}"
            old = [_s(r) for r in self.r.zrangebyscore(index, "-inf", now - older_than_ms,
                                                       start=0, num=limit)]
            if old:
                with self.r.pipeline(transaction=False) as pipe:
                    for run_id in old:
                        pipe.exists(self.run_key(run_id))
                    alive = pipe.execute()
                gone = [run_id for run_id, exists in zip(old, alive, strict=True) if not exists]
                if gone:
                    self.r.zrem(index, *gone)
                    dropped += len(gone)
            if not self.r.exists(index):
                self.r.srem(functions_key, function_id)
        return dropped

    def close(self) -> None:
        self.r.close()
