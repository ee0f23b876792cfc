"""The invariants a chaos run must keep, checked on what the store and the ledger hold once
everything has settled. Pure functions of a :class:`Snapshot`: nothing here talks to Redis.

A step may execute more than once only when an execution died before its checkpoint was
stored. The ledger says when each execution started and ended and in which process; the
fault log (and the crash entries) say when each process was killed. So:

- an execution that started after the step's checkpoint was known to be stored (the first
  moment handler code got the result back) is a violation;
- an execution whose result is not the stored one and whose process was not killed after it
  started is a violation (nothing explains why its checkpoint was not kept);
- two executions of one step alive at the same time are a violation (one holder at a time).
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from celery_steps.runs import EventInfo
from celery_steps.store.base import RunRecord
from celery_steps.store.redis_keys import KeyLayout
from tests.chaos.driver import OrderPlan, Sent
from tests.chaos.workload import CHARGE, CHARGE_LIMIT, CRON, NOTIFY, NOTIFY_LIMIT, ORDER

RUN_NOT_ENDED = "run neither ended nor legitimately waiting"
RUN_FAILED = "run failed for a reason other than the faults"
STEP_TWICE = "checkpointed step executed twice"
EVENT_ROUTING = "event not routed exactly once"
CONCURRENCY = "concurrency limit exceeded"
PARENT = "parent not resolved"
TASK = "run_task not resolved"
EXPIRY = "key without the expiry it should have"
KINDS = (RUN_NOT_ENDED, RUN_FAILED, STEP_TWICE, EVENT_ROUTING, CONCURRENCY, PARENT, TASK,
         EXPIRY)
IN_FLIGHT = 5.0  # a message published this close to the snapshot may still be on its way
KILL_SLACK = 0.05  # a kill is stamped just before the signal: an execution may start within it
# An execution whose checkpoint write met Redis down (or its connection dropped) may run again
# (docs/execution-model.md): its end within this long before an outage's end counts.
OUTAGE_REACH = 3.0
# Keys that legitimately have no expiry: live structures, not the data of one run or event
# (``<ns>:`` and, for a shard's keys, ``{s<k>}:`` removed; see celery_steps/store/redis_keys.py).
LIVE_KEYS = ("timers", "functions", "config", "runs:fns")
LIVE_PREFIXES = ("runs:fn:", "runs:st:", "procs:", "gate:conc:")


@dataclass(frozen=True)
class Violation:
    kind: str
    detail: str


@dataclass
class Snapshot:
    """Everything the checker reads, gathered after the system settled."""

    namespace: str
    shards: int  # the store's shard count (``steps_store_shards``): its KeyLayout
    runs: dict[str, RunRecord]
    events: dict[str, EventInfo | None]  # None: not found in the store
    keys: list[tuple[str, int]]  # (key, PTTL in ms; -1: no expiry)
    waiters: dict[str, list[str]]  # waiter index key -> the run ids of its entries
    timers: list[str]
    execs: list[dict[str, Any]]
    seen: dict[str, dict[str, Any]]
    crashes: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    crons: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    kills: list[tuple[int, float]]  # (pid, when) of every process a fault killed
    outages: list[tuple[float, float]]  # (from, to): Redis down, or its connections dropped
    taken_at: float


@dataclass
class Execution:
    x: str
    run: str
    fn: str
    step: str
    key: str | None
    pid: int
    start: float
    end: float | None = None
    killed: float | None = None  # when its process was killed, if after it started

    def life(self, horizon: float) -> float:
        """When it stopped: its end, else the kill of its process, else still going."""
        if self.end is not None:
            return self.end
        return max(self.start, self.killed) if self.killed is not None else horizon


@dataclass
class Findings:
    violations: list[Violation] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def add(self, kind: str, detail: str) -> None:
        self.violations.append(Violation(kind, detail))

    def by_kind(self) -> dict[str, int]:
        counts = Counter(v.kind for v in self.violations)
        return {kind: counts.get(kind, 0) for kind in KINDS}


def check(snap: Snapshot, plans: list[OrderPlan], sent: Sent) -> Findings:
    """Every invariant, on one snapshot."""
    found = Findings()
    execs = executions(snap)
    check_runs_ended(snap, plans, found)
    check_steps_once(snap, execs, found)
    check_routing(snap, plans, sent, found)
    for fn, limit in ((CHARGE, CHARGE_LIMIT), (NOTIFY, NOTIFY_LIMIT)):
        check_concurrency([e for e in execs if e.fn == fn], fn, limit, snap.taken_at, found)
    check_parents(snap, found)
    check_tasks(snap, plans, found)
    check_expiry(snap, found)
    task_runs = Counter(t["run"] for t in snap.tasks)
    lost = lost_messages(snap)
    found.figures.update({
        "runs": len(snap.runs),
        "runs_by_function_and_status": dict(sorted(Counter(
            f"{r.function_id}:{r.status}" for r in snap.runs.values()).items())),
        "step_executions": len(execs),
        "re_executions_after_a_kill": len(execs) - len({(e.run, e.step) for e in execs}),
        "run_task_tasks_executed_more_than_once": sum(1 for n in task_runs.values() if n > 1),
        "stale_timers": sum(1 for m in snap.timers if _timer_run(m) not in _live(snap)),
        "messages_published": sum(1 for m in snap.messages if m["e"] == "pub"),
        "messages_lost_in_the_broker": dict(sorted(Counter(m["task"] for m in lost).items())),
    })
    return found


def lost_messages(snap: Snapshot) -> list[dict[str, Any]]:
    """Messages published (not just before the snapshot) that no worker ever received."""
    received = {m["id"] for m in snap.messages if m["e"] == "recv"}
    return [m for m in snap.messages if m["e"] == "pub" and m["id"] not in received
            and m["t"] < snap.taken_at - IN_FLIGHT]


def clues(snap: Snapshot, needle: str) -> str:
    """What the timers and the message log say about a run or an event id: to tell a run
    nothing will move from one whose last message the broker lost."""
    timers = [m for m in snap.timers if needle in m.split("|")]
    sent = [m for m in snap.messages if m["e"] == "pub" and needle in m.get("args", [])]
    lost = bool(sent) and sent[-1]["id"] in {m["id"] for m in lost_messages(snap)}
    last = (f"; last message {sent[-1]['task']} at t={sent[-1]['t']:.3f}"
            f"{' never received' if lost else ' received'}") if sent else ""
    return f"timers: {timers or 'none'}; {len(sent)} message(s) sent for it{last}"


# -- executions --------------------------------------------------------------------------------
def executions(snap: Snapshot) -> list[Execution]:
    """The step executions of the ledger, with when their process was killed."""
    deaths: dict[int, list[float]] = defaultdict(list)
    for pid, t in list(snap.kills) + [(c["pid"], c["t"]) for c in snap.crashes]:
        deaths[pid].append(t)
    for times in deaths.values():
        times.sort()
    by_x: dict[str, Execution] = {}
    for entry in snap.execs:
        if entry["e"] == "start":
            by_x[entry["x"]] = Execution(entry["x"], entry["run"], entry["fn"], entry["step"],
                                         entry.get("key"), entry["pid"], entry["t"])
    for entry in snap.execs:
        if entry["e"] == "end" and entry["x"] in by_x:
            by_x[entry["x"]].end = entry["t"]
    for e in by_x.values():
        times = deaths.get(e.pid, [])
        i = bisect.bisect_left(times, e.start - KILL_SLACK)
        e.killed = times[i] if i < len(times) else None
    return sorted(by_x.values(), key=lambda e: e.start)


def check_steps_once(snap: Snapshot, execs: list[Execution], found: Findings) -> None:
    groups: dict[tuple[str, str], list[Execution]] = defaultdict(list)
    for e in execs:
        groups[(e.run, e.step)].append(e)
    for (run_id, step), group in groups.items():
        run = snap.runs.get(run_id)
        state = run.steps.get(step) if run is not None else None
        result = state.get("result") if state and state.get("status") == "completed" else None
        stored = result.get("x") if isinstance(result, dict) else None
        seen = snap.seen.get(f"{run_id}|{step}")
        where = f"step {step!r} of run {run_id} ({group[0].fn})"
        if seen is not None and stored is not None and seen["x"] != stored:
            found.add(STEP_TWICE, f"{where}: the handler got execution {seen['x']}, the store "
                                  f"holds {stored}")
        stored_by = seen["t"] if seen is not None else None
        for e in group:
            if e.x == stored:
                continue
            if stored_by is not None and e.start > stored_by:
                found.add(STEP_TWICE, f"{where}: execution {e.x} (pid {e.pid}) started "
                                      f"{e.start - stored_by:.3f}s after the checkpoint of "
                                      f"{stored} was stored")
            elif e.killed is None and not _met_an_outage(e, snap.outages):
                found.add(STEP_TWICE, f"{where}: execution {e.x} (pid {e.pid}, "
                                      f"{'ended' if e.end else 'no end'}) was not kept, though "
                                      f"its process was not killed (stored: {stored})")
        for i, first in enumerate(group):
            for later in group[i + 1:]:
                if later.start < first.life(snap.taken_at):
                    found.add(STEP_TWICE, f"{where}: executions {first.x} (pid {first.pid}) "
                                          f"and {later.x} (pid {later.pid}) ran at the same time")


def _met_an_outage(e: Execution, outages: list[tuple[float, float]]) -> bool:
    """Whether Redis was down, or its connections dropped, when the execution's checkpoint
    was to be written: the at-least-once window of a step whose process did not die."""
    return e.end is not None and any(
        down - KILL_SLACK <= e.end + OUTAGE_REACH and e.end <= up + KILL_SLACK
        for down, up in outages)


def check_concurrency(execs: list[Execution], fn: str, limit: int, horizon: float,
                      found: Findings) -> None:
    """At most ``limit`` executions of ``fn``'s steps per key alive at any moment."""
    by_key: dict[str | None, list[Execution]] = defaultdict(list)
    for e in execs:
        by_key[e.key].append(e)
    for key, group in by_key.items():
        spans = [(e.start, e.life(horizon), e.x) for e in group]
        spans = [span for span in spans if span[1] > span[0]]  # died as it started: no span
        moments = sorted([(start, 1, x) for start, _, x in spans]
                         + [(end, -1, x) for _, end, x in spans])
        alive: set[str] = set()
        for t, delta, x in moments:  # at one instant, ends (-1) sort before starts
            if delta < 0:
                alive.discard(x)
                continue
            alive.add(x)
            if len(alive) > limit:
                found.add(CONCURRENCY, f"{fn} (key {key!r}, limit {limit}): {len(alive)} "
                                       f"executions at t={t:.3f}: {sorted(alive)}")


# -- runs --------------------------------------------------------------------------------------
def _live(snap: Snapshot) -> set[str]:
    return {r.id for r in snap.runs.values() if not r.ended}


def _order_of(run: RunRecord, plans_by_event: dict[str, OrderPlan]) -> OrderPlan | None:
    return plans_by_event.get(run.event_ids[0]) if run.event_ids else None


def legitimately_waiting(run: RunRecord, plan: OrderPlan | None) -> bool:
    """An order run waiting for a confirmation the driver never sends."""
    wait = run.steps.get("confirm")
    return (run.function_id == ORDER and run.status == "waiting" and plan is not None
            and not plan.confirm and wait is not None and wait.get("status") == "waiting")


def check_runs_ended(snap: Snapshot, plans: list[OrderPlan], found: Findings) -> None:
    by_event = {p.event_id: p for p in plans}
    stuck = {run.id: clues(snap, run.id) for run in snap.runs.values()
             if not run.ended and not legitimately_waiting(run, _order_of(run, by_event))}
    lost = 0
    for run in snap.runs.values():
        if run.id in stuck:
            last = max(run.steps.items(), key=lambda kv: int(kv[1].get("pos", 0)),
                       default=("-", {}))
            why = stuck[run.id]
            child = last[1].get("child") if last[1].get("op") == "invoke" else None
            if child in stuck:
                why += f"; it waits for its child {child}, itself stuck ({stuck[child]})"
            found.add(RUN_NOT_ENDED, f"run {run.id} ({run.function_id}) is {run.status}, "
                                     f"last step {last[0]!r} {last[1].get('status')} ({why})")
            continue
        if not run.ended:
            continue
        if run.notify:
            found.add(RUN_NOT_ENDED, f"run {run.id} ({run.function_id}) ended but its "
                                     "notifications were never confirmed (outbox pending)")
        if run.status == "failed":
            name = (run.error or {}).get("name")
            if name == "WorkerLostError":
                lost += 1  # killed more often than its retries: a legitimate end
            else:
                found.add(RUN_FAILED, f"run {run.id} ({run.function_id}): {run.error}")
        elif run.status == "cancelled":
            found.add(RUN_FAILED, f"run {run.id} ({run.function_id}) was cancelled")
    found.figures["runs_failed_worker_lost"] = lost


def check_parents(snap: Snapshot, found: Findings) -> None:
    """Every order's invoke step resolved with its child's output; every child has its parent."""
    children = {r.id: r for r in snap.runs.values() if r.function_id == CHARGE}
    claimed: set[str] = set()
    for run in snap.runs.values():
        if run.function_id != ORDER or "charge" not in run.steps:
            continue
        step = run.steps["charge"]
        child = children.get(step.get("child", ""))
        claimed.add(step.get("child", ""))
        if child is None:
            found.add(PARENT, f"order run {run.id}: its child run {step.get('child')} is missing")
            continue
        if child.parent is None or child.parent.get("run_id") != run.id:
            found.add(PARENT, f"child run {child.id} does not name its parent {run.id}")
        if child.ended and step.get("status") not in ("completed", "failed"):
            found.add(PARENT, f"order run {run.id}: child {child.id} {child.status} but the "
                              f"invoke step is {step.get('status')}")
        elif step.get("status") == "completed" and step.get("result") != child.output:
            found.add(PARENT, f"order run {run.id}: invoke result {step.get('result')} is not "
                              f"the child's output {child.output}")
    for child_id in set(children) - claimed:
        found.add(PARENT, f"child run {child_id} belongs to no order's invoke step")


def check_tasks(snap: Snapshot, plans: list[OrderPlan], found: Findings) -> None:
    """Every order past its ``run_task`` step got the result of the Celery task it sent
    (which ran), and every completed order returns what its child and its task gave it."""
    by_event = {p.event_id: p for p in plans}
    ran = {t["run"] for t in snap.tasks}
    for run in snap.runs.values():
        plan = _order_of(run, by_event) if run.function_id == ORDER else None
        if plan is None:
            continue
        step = run.steps.get("receipt")
        past = run.status == "completed" or "ship" in run.steps or "confirm" in run.steps
        if step is None or step.get("status") != "completed":
            if past:
                found.add(TASK, f"order run {run.id} went past its run_task step, which is "
                                f"{None if step is None else step.get('status')}")
            continue
        want = {"receipt": f"r-{run.id}", "cents": plan.data["cents"]}
        if step.get("result") != want:
            found.add(TASK, f"order run {run.id}: run_task result {step.get('result')} is not "
                            f"the task's {want}")
        if run.id not in ran:
            found.add(TASK, f"order run {run.id}: run_task step completed, but its task "
                            "never ran")
        if run.status == "completed":
            output = run.output if isinstance(run.output, dict) else {}
            if (output.get("charged"), output.get("receipt")) != (plan.data["cents"],
                                                                  want["receipt"]):
                found.add(TASK, f"order run {run.id} returned {run.output}: not its child's "
                                f"and its task's results")


# -- events ------------------------------------------------------------------------------------
def _runs_by_event(runs: Iterable[RunRecord], fn: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for run in runs:
        if run.function_id == fn:
            for event_id in run.event_ids:
                found[event_id].append(run.id)
    return found


def _routed_once(snap: Snapshot, event_id: str, runs: list[str], what: str,
                 found: Findings, *, expect_runs: int = 1) -> None:
    if len(runs) != expect_runs:
        found.add(EVENT_ROUTING, f"{what} {event_id} started {len(runs)} runs: {runs}")
    info = snap.events.get(event_id)
    if info is None or not info.routed:
        state = "missing" if info is None else "not routed"
        found.add(EVENT_ROUTING, f"{what} {event_id} is {state} ({clues(snap, event_id)})")
    elif sorted(info.run_ids) != sorted(runs):
        found.add(EVENT_ROUTING, f"{what} {event_id} recorded runs {info.run_ids}, found {runs}")


def check_routing(snap: Snapshot, plans: list[OrderPlan], sent: Sent, found: Findings) -> None:
    orders = _runs_by_event(snap.runs.values(), ORDER)
    for plan in plans:
        if plan.index in sent.orders:
            _routed_once(snap, plan.event_id, orders.get(plan.event_id, []), "order event",
                         found)
    notifies = _runs_by_event(snap.runs.values(), NOTIFY)
    shipped: set[str] = set()
    for run in snap.runs.values():
        ship = run.steps.get("ship") if run.function_id == ORDER else None
        if ship is not None and ship.get("status") == "completed":
            for event_id in ship["result"]:
                shipped.add(event_id)
                _routed_once(snap, event_id, notifies.get(event_id, []), "shipped event", found)
    for event_id in set(notifies) - shipped:
        found.add(EVENT_ROUTING, f"notify runs {notifies[event_id]} for event {event_id}, "
                                 "which no order sent")
    by_event = {p.event_id: p for p in plans}
    by_index: dict[int, RunRecord] = {}
    for order in (r for r in snap.runs.values() if r.function_id == ORDER):
        planned = _order_of(order, by_event)
        if planned is not None:
            by_index[planned.index] = order
    for index, confirms in sent.confirms.items():
        ids = {event_id for event_id, _ in confirms}
        for event_id in ids:
            _routed_once(snap, event_id, [], "confirm event", found, expect_runs=0)
        confirmed = by_index.get(index)
        wait = confirmed.steps.get("confirm") if confirmed is not None else None
        got = (wait or {}).get("result")
        if wait is None or wait.get("status") != "completed" or not isinstance(got, dict) \
                or got.get("id") not in ids:
            found.add(EVENT_ROUTING, f"order {index}: its wait was resolved by "
                                     f"{got.get('id') if isinstance(got, dict) else got!r}, "
                                     f"not by one of {sorted(ids)} sent after it began")
    check_crons(snap, found)


def check_crons(snap: Snapshot, found: Findings) -> None:
    """One run per tick, and a run for every tick whose cron task finished."""
    ticks = _runs_by_event(snap.runs.values(), CRON)
    for event_id, runs in ticks.items():
        _routed_once(snap, event_id, runs, "cron tick", found)
    started = {c["task_id"]: c.get("tick") for c in snap.crons if c["e"] == "pre"}
    for done in (c for c in snap.crons if c["e"] == "post" and c.get("state") == "SUCCESS"):
        candidates = {str(t) for t in (done.get("tick"), started.get(done["task_id"])) if t}
        if candidates and not any(f"cron:{CRON}:{tick}" in ticks for tick in candidates):
            found.add(EVENT_ROUTING, f"cron task {done['task_id']} finished for tick "
                                     f"{sorted(candidates)} but no run exists for it")
    found.figures["cron_ticks"] = len(ticks)


# -- expiry ------------------------------------------------------------------------------------
def _timer_run(member: str) -> str:
    parts = member.split("|")
    return parts[2] if parts[0] in ("r", "b") and len(parts) > 2 else ""


def shard_part(layout: KeyLayout, key: str) -> tuple[int | None, str]:
    """A key's shard (None for a global key) and its name without ``<ns>:{s<k>}:`` (or,
    for a global key, without ``<ns>:``)."""
    for shard in range(layout.shards):
        prefix = layout.timers(shard).removesuffix("timers")
        if key.startswith(prefix):
            return shard, key[len(prefix):]
    return None, key.removeprefix(layout.ns + ":")


def _run_of_key(rest: str) -> str | None:
    """The run a shard key belongs to (``run:<id>`` and ``run:<id>:<part>``), if any."""
    if not rest.startswith("run:"):
        return None
    return rest[len("run:"):].split(":", 1)[0]


def check_expiry(snap: Snapshot, found: Findings) -> None:
    """Ended runs' and events' keys expire; live structures have no expiry; nothing else."""
    live = _live(snap)
    layout = KeyLayout(snap.namespace, snap.shards)
    for key, pttl in snap.keys:
        shard, rest = shard_part(layout, key)
        run_id = _run_of_key(rest) if shard is not None else None
        if run_id is not None:
            if run_id in live and pttl >= 0:
                found.add(EXPIRY, f"{key} of live run {run_id} expires in {pttl} ms")
            elif run_id not in live and pttl < 0:
                state = "ended" if run_id in snap.runs else "missing"
                found.add(EXPIRY, f"{key} of {state} run {run_id} has no expiry")
            continue
        if pttl >= 0 or rest in LIVE_KEYS or rest.startswith(LIVE_PREFIXES):
            continue
        if shard is not None and rest.startswith("w:"):
            if rest.endswith(":paths"):
                continue  # the match paths in use for an event name: kept, bounded by code
            stale = [r for r in snap.waiters.get(key, []) if r not in live]
            if stale:
                found.add(EXPIRY, f"{key} holds waiters of ended runs {sorted(stale)[:5]}")
            continue
        found.add(EXPIRY, f"{key} has no expiry")
