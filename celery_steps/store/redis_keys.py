"""Every Redis key the store writes, in one place.

The namespace ``<ns>`` is ``steps_namespace`` (default ``celery_steps``). Keys that change
together live in one *shard*: ``<ns>:{s<k>}:...`` with ``k = crc32(id) % shards``, the run
id for a run's keys, the event id for an event's. The ``{s<k>}`` hash tag puts a shard in one
Redis Cluster slot, so a Lua script that touches a run, its shard's timers and indexes stays
in one slot, while the shards (``steps_store_shards``: 16 on a cluster, 1 on one server) spread
the load over the masters. Pollers and listings visit every shard.

Per shard ``S = <ns>:{s<k>}``:

======================================  ======  ===============================================
key                                     type    content
======================================  ======  ===============================================
``S:run:<run_id>``                      hash    run metadata: function_id, status, created_at,
                                                ended_at, output, error, attempt, parent, wake,
                                                deadlines (Timeouts, absolute ms), waiters
                                                (index entries to drop on end), holder
                                                (``token@proc`` executing it), crashes (dead
                                                holders since progress), sop (last suspend's
                                                op id:result), notify (the end's outbox is
                                                pending), trace (W3C traceparent), cur
                                                (``<since>|<step>``: the step.run executing,
                                                as of its last heartbeat), b:<step> (a parallel
                                                branch's holder), conc (its concurrency gates,
                                                JSON), thr (its throttle gate, until it starts),
                                                prio (priority ms), st (it went through its
                                                gates once), pend (the debounce/batch gate it
                                                collects for, while it does), pclosed (the
                                                gate its start closed), rel (the holder that
                                                let it go last), cfrom (its status before it
                                                was cancelled): for retried calls
``S:run:<run_id>:steps``                hash    step key -> step state JSON
``S:run:<run_id>:events``               string  the triggering events (JSON list); kept out of
                                                the metadata so that hash stays a listpack
``S:run:<run_id>:done``                 list    pushed when the run ends (wait_for_run blocks)
``S:run:<run_id>:eids``                 set     event ids a debounce/batch run collected
``S:timers``                            zset    timer member scored by due time (ms):
                                                ``r|<function>|<run>`` (wake, watchdog or
                                                outbox of a run), ``e|<event>`` (route an
                                                event)
``S:timers:claim``                      string  ``<claim id>|<JSON claimed>``: the last claim
                                                of due timers, for a retried claim (PX redo)
``S:runs:fns``                          set     function ids with runs in this shard
``S:runs:fn:<function_id>``             zset    run id scored by created_at
``S:runs:st:<status>``                  zset    ``<run_id>|<function_id>`` scored by
                                                created_at, per status (listing by status
                                                pages from it)
``S:evt:<event_id>``                    string  ``{"received_at", "event"}`` (Redis TIME);
                                                expires after the dedupe window (24 h), or that
                                                long after a delayed event is due: SET NX
``S:evt:<event_id>:runs``               string  JSON run ids the event started (routed)
``S:evt:<event_id>:skips``              string  JSON ``[function, reason, run id]``: functions
                                                it matched that started no run, and why
``S:w:<event_name>``                    hash    waiters without ``match`` of this shard's runs:
                                                member -> ``<registered_at>|<JSON>``
``S:w:<event_name>:m:<path>=<value>``   hash    waiters whose ``match`` path has that value
``S:w:<event_name>:paths``              set     match paths in use for that event name
======================================  ======  ===============================================

Global (one key each, anywhere in a cluster):

======================================  ======  ===============================================
``<ns>:config``                         hash    ``shards``: the shard count the data was
                                                written with (a different one is refused)
``<ns>:functions``                      set     function ids served on this store
``<ns>:proc:<proc>``                    string  a live worker process (PX lease TTL), beaten by
                                                its heartbeat: the timer members it holds (JSON)
``<ns>:procs:<host>``                   set     the processes of a host that beat for
                                                themselves (a worker on the host reaps the dead)
``<ns>:task:<task_id>``                 string  a ``run_task`` task a worker started:
                                                ``{"status": "started", "proc": ...}``
``<ns>:task-end:<task_id>``             string  how that task ended (JSON: ``status`` and
                                                ``result`` or ``error``)
``<ns>:gate:...``                       \\-      flow-control gates (see ``redis_gates.py``):
                                                ``conc:{fn:<fn>:<key>}`` (+ ``:q``, ``:qx``,
                                                ``:qn``), ``throttle:{fn:...}``, ``rate:...``,
                                                ``single:...`` (``<run>|<claimed ms>``), and
                                                ``pend:...`` (the run collecting a debounce or
                                                batch)
``<ns>:timers:signal``                  channel published when a shard's earliest timer moves
                                                earlier: blocked pollers wake
======================================  ======  ===============================================

What expires: ended runs (every key of the run) after ``steps_run_retention``; events after
the dedupe window (past their due time when delayed); routing records with their event;
process keys after ``steps_lease_ttl`` unless beaten; rate and throttle gates after their
period; ``run_task`` starts and ends after the retention; singleton and pending gates when their run
ends or starts. What is trimmed: the run indexes, by a timer poller's sweep every 10 minutes
(entries of runs that expired), and the host process registries, when a worker reaps a dead
process. What stays, bounded by the code rather than the data: the function sets and, per
event name, the set of ``match`` paths in use (``tests/store/test_growth.py`` counts them).
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass

STATUSES = ("queued", "running", "sleeping", "waiting", "completed", "failed", "cancelled")


@dataclass(frozen=True)
class RunKeys:
    """The keys of one run (all in its shard's slot) and its shard's keys its scripts touch."""

    meta: str
    steps: str
    events: str
    eids: str
    done: str
    timers: str
    statuses: tuple[str, ...]
    fns: str


class KeyLayout:
    """Key names of a namespace sharded ``shards`` ways (see the module docstring)."""

    def __init__(self, namespace: str, shards: int) -> None:
        if shards < 1:
            raise ValueError("shards must be >= 1")
        self.ns = namespace
        self.shards = shards
        self._prefix = tuple(f"{namespace}:{{s{k}}}" for k in range(shards))
        self._statuses = tuple(tuple(f"{p}:runs:st:{s}" for s in STATUSES)
                               for p in self._prefix)
        self.signal = f"{namespace}:timers:signal"
        self.functions = f"{namespace}:functions"
        self.config = f"{namespace}:config"

    # -- which shard ------------------------------------------------------------------------
    def shard_of(self, ident: str) -> int:
        return zlib.crc32(ident.encode()) % self.shards if self.shards > 1 else 0

    def member_shard(self, member: str) -> int:
        """The shard of a timer member: its run's (``r|<fn>|<run>``) or event's (``e|<id>``)."""
        kind, _, rest = member.partition("|")
        return self.shard_of(rest.rpartition("|")[2] if kind == "r" else rest)

    def by_shard(self, members: list[str]) -> dict[int, list[str]]:
        grouped: dict[int, list[str]] = {}
        for member in members:
            grouped.setdefault(self.member_shard(member), []).append(member)
        return grouped

    # -- per shard --------------------------------------------------------------------------
    def timers(self, shard: int) -> str:
        return self._prefix[shard] + ":timers"

    def last_claim(self, shard: int) -> str:
        """The shard's last timer claim, answered again to a retried claim_due."""
        return self._prefix[shard] + ":timers:claim"

    def fns(self, shard: int) -> str:
        return self._prefix[shard] + ":runs:fns"

    def fn_index(self, shard: int, function_id: str) -> str:
        return f"{self._prefix[shard]}:runs:fn:{function_id}"

    def status_index(self, shard: int, status: str) -> str:
        return self._statuses[shard][STATUSES.index(status)]

    def run(self, run_id: str) -> str:
        return f"{self._prefix[self.shard_of(run_id)]}:run:{run_id}"

    def run_keys(self, run_id: str) -> RunKeys:
        shard = self.shard_of(run_id)
        meta = f"{self._prefix[shard]}:run:{run_id}"
        return RunKeys(meta, meta + ":steps", meta + ":events", meta + ":eids", meta + ":done",
                       self._prefix[shard] + ":timers", self._statuses[shard],
                       self._prefix[shard] + ":runs:fns")

    def event(self, event_id: str) -> str:
        return f"{self._prefix[self.shard_of(event_id)]}:evt:{event_id}"

    def event_timers(self, event_id: str) -> str:
        return self._prefix[self.shard_of(event_id)] + ":timers"

    def waiters(self, shard: int, event_name: str) -> str:
        return f"{self._prefix[shard]}:w:{event_name}"

    def waiter_index(self, shard: int, event_name: str, path: str | None,
                     wanted: str | None) -> str:
        base = self.waiters(shard, event_name)
        if path is None:
            return base
        if wanted is not None and len(wanted) > 64:
            wanted = "sha1:" + hashlib.sha1(wanted.encode()).hexdigest()
        return f"{base}:m:{path}={wanted}"

    # -- global -----------------------------------------------------------------------------
    def proc(self, proc: str) -> str:
        return f"{self.ns}:proc:{proc}"

    def host(self, host: str) -> str:
        return f"{self.ns}:procs:{host}"

    def task(self, task_id: str) -> str:
        return f"{self.ns}:task:{task_id}"

    def task_end(self, task_id: str) -> str:
        return f"{self.ns}:task-end:{task_id}"
