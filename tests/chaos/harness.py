"""A seeded chaos run: the workload under faults, then the invariants.

:func:`run_chaos` starts its own Redis servers and workers, drives the workload of
:mod:`tests.chaos.app` while :class:`~tests.chaos.injector.Injector` injects faults, stops the
faults once every order has reached its wait, lets the system settle (waiting on conditions,
with a deadline), then checks every invariant of :mod:`tests.chaos.checker` and returns the
figures and the violations. ``tests/chaos/test_chaos.py`` runs a short seed;
``python -m bench.chaos`` runs a long one.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from celery_steps import EventNotFound
from celery_steps.runs import EventInfo
from tests.chaos.checker import (
    Findings,
    Snapshot,
    Violation,
    check,
    legitimately_waiting,
    shard_part,
)
from tests.chaos.cluster import APP, RedisProcess, Worker, Workers
from tests.chaos.driver import Driver, OrderPlan, plan_orders
from tests.chaos.injector import DEFAULT_WEIGHTS, Fault, Injector
from tests.chaos.ledger import Ledger
from tests.chaos.workload import CRON, FUNCTIONS, NOTIFY
from tests.conftest import ROOT, wait_until

ENDED_STATUSES = (b"completed", b"failed", b"cancelled")
# kombu's Redis keys of a queue: the queue itself and its priority lists
QUEUE_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


@dataclass
class ChaosConfig:
    seed: int = 1
    orders: int = 40
    workers: int = 2
    concurrency: int = 2
    fault_interval: float = 3.0  # mean seconds between faults (exponential)
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    max_down: float = 1.5  # longest Redis outage of a restart, seconds
    confirm_share: float = 0.8
    max_inflight: int = 16  # orders sent but not yet at their wait
    fault_tail: float = 60.0  # faults stop this long after the last order was sent, at the latest
    fault_window_max: float = 1800.0  # and by then in any case
    settle_timeout: float = 180.0
    conf: dict[str, Any] = field(default_factory=dict)  # merged into the app's conf
    keep_dir: bool = False  # keep the logs and Redis files even when nothing was violated


@dataclass
class ChaosResult:
    config: ChaosConfig
    t0: float
    faults: list[Fault]
    exits: list[Fault]
    crashes: list[dict[str, Any]]
    unhit_points: list[str]
    harness_errors: list[str]
    findings: Findings
    timings: dict[str, float]
    send_errors: int
    workdir: Path

    @property
    def violations(self) -> list[Violation]:
        return self.findings.violations

    def replay_command(self) -> str:
        """The ``bench.chaos`` command line that replays this run's seed and settings."""
        cfg = self.config
        weights = ("all" if cfg.weights == DEFAULT_WEIGHTS else
                   ",".join(f"{k}={v:g}" for k, v in cfg.weights.items() if v > 0))
        return (f"python -m bench.chaos --seed {cfg.seed} --runs {cfg.orders} --workers "
                f"{cfg.workers} --concurrency {cfg.concurrency} --fault-interval "
                f"{cfg.fault_interval:g} --max-down {cfg.max_down:g} --faults {weights}")

    def figures(self) -> dict[str, Any]:
        kinds = Counter(f.kind for f in self.faults)
        hits = Counter(c["point"] for c in self.crashes)
        return {
            "seed": self.config.seed,
            "orders": self.config.orders,
            **self.findings.figures,
            "kills": {"pool process": kinds["kill-child"],
                      "whole worker": kinds["kill-worker"],
                      "crash point": len(self.crashes),
                      "processes killed": sum(len(f.pids) for f in self.faults)
                      + len(self.crashes)},
            "crash points hit": dict(sorted(hits.items())),
            "crash points armed, not reached": self.unhit_points,
            "redis restarts": kinds["redis-restart"],
            "connection kills": kinds["client-kill"],
            "workers that exited on their own": len(self.exits),
            "driver send errors (retried)": self.send_errors,
            "violations": self.findings.by_kind(),
            "seconds": self.timings,
        }

    def fault_log(self) -> str:
        crash_faults = [Fault(c["t"], "crash", f"{c['point']} ({c['label']})", [c["pid"]])
                        for c in self.crashes]
        merged = sorted(self.faults + self.exits + crash_faults, key=lambda f: f.t)
        return "\n".join(f.line(self.t0) for f in merged)

    def report(self) -> str:
        started = datetime.fromtimestamp(self.t0, timezone.utc).isoformat(timespec="milliseconds")
        lines = [f"chaos run, seed {self.config.seed}, t0 = {started}",
                 f"replay: {self.replay_command()}",
                 json.dumps(self.figures(), indent=2)]
        if self.harness_errors:
            lines += ["harness errors:", *self.harness_errors]
        if self.violations:
            lines += [f"{len(self.violations)} violation(s):",
                      *(f"- [{v.kind}] {v.detail}" for v in self.violations[:50])]
        lines += ["fault log:", self.fault_log(), f"logs and Redis files: {self.workdir}"]
        return "\n".join(lines)


@contextlib.contextmanager
def chaos_app(env: dict[str, str]) -> Iterator[ModuleType]:
    """The workload app imported in this process, configured from ``env`` (restored after)."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    sys.modules.pop(APP, None)
    try:
        yield importlib.import_module(APP)
    finally:
        sys.modules.pop(APP, None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_chaos(cfg: ChaosConfig, *, progress: bool = False) -> ChaosResult:
    """One chaos run; every process it started is gone when it returns."""
    workdir = Path(tempfile.mkdtemp(prefix=f"chaos-{cfg.seed}-"))
    (workdir / "logs").mkdir()
    arm_dir = workdir / "arm"
    arm_dir.mkdir()
    ledger_redis = RedisProcess(workdir / "ledger", aof=False)
    store_redis = RedisProcess(workdir / "store", aof=True)
    ns = f"chaos{cfg.seed}"
    env = {"CHAOS_REDIS_URL": store_redis.url, "CHAOS_LEDGER_URL": ledger_redis.url,
           "CHAOS_NAMESPACE": ns, "CHAOS_CONF": json.dumps(cfg.conf), "PYTHONPATH": str(ROOT)}
    worker_env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_STEPS_CRASH")}
    worker_env.update(env, CHAOS_ARM_DIR=str(arm_dir))
    workers = Workers(worker_env, workdir / "logs", concurrency=cfg.concurrency)
    ledger = Ledger(ledger_redis.url)
    def say(line: str) -> None:
        if progress:
            print(line, flush=True)

    try:
        with chaos_app(env) as app:
            result = _session(cfg, app, ledger, store_redis, workers, arm_dir, workdir, say)
    finally:
        workers.stop_all()
        store_redis.stop()
        ledger_redis.stop()
    (workdir / "report.txt").write_text(result.report() + "\n")
    if not result.violations and not result.harness_errors and not cfg.keep_dir:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _session(cfg: ChaosConfig, app: ModuleType, ledger: Ledger, store_redis: RedisProcess,
             workers: Workers, arm_dir: Path, workdir: Path,
             say: Callable[[str], None]) -> ChaosResult:
    started = time.monotonic()
    for _ in range(cfg.workers):
        workers.start()
    _wait_ready(workers, ledger)
    plans = plan_orders(random.Random(f"{cfg.seed}:workload"), cfg.seed, cfg.orders,
                        cfg.confirm_share)
    driver = Driver(app, ledger, plans, max_inflight=cfg.max_inflight)
    injector = Injector(random.Random(f"{cfg.seed}:faults"), cfg.weights, store_redis, workers,
                        ledger, arm_dir, interval=cfg.fault_interval, max_down=cfg.max_down)
    stop = threading.Event()
    faults = threading.Thread(target=injector.run, args=(stop,), name="chaos-faults", daemon=True)
    t0 = time.time()
    faults.start()
    window_end = time.monotonic() + cfg.fault_window_max
    last_note = 0.0
    while not driver.all_waiting and time.monotonic() < window_end:
        driver.step()
        if driver.all_sent_at is not None:
            window_end = min(window_end, driver.all_sent_at + cfg.fault_tail)
        if time.monotonic() - last_note > 10:
            last_note = time.monotonic()
            say(f"  +{time.time() - t0:5.0f}s sent {len(driver.sent.orders)}/{cfg.orders}, "
                f"at their wait {len(driver.sent.waits_seen)}, faults {len(injector.log)}")
        time.sleep(0.2)
    stop.set()
    faults.join()
    window = time.time() - t0
    unhit = injector.disarm()
    injector.replace_dead()
    while len(workers.live) < cfg.workers:
        workers.start()
    _wait_ready(workers, ledger)
    say(f"  faults stopped after {window:.0f}s ({len(injector.log)} faults); settling")
    settle_start = time.time()
    pending = _settle(cfg, app, driver, plans)
    settle = time.time() - settle_start
    say(f"  {'settled' if pending is None else 'not settled'} after {settle:.0f}s; checking")
    if pending is not None:  # something kept moving: a timer firing for ever, a message loop
        injector.errors.append(f"not settled within {cfg.settle_timeout:g}s: still {pending}")
    snapshot = observe(app, ledger, plans, driver, injector)
    dump = {name: ledger.entries(name) for name in ("exec", "crash", "task", "cron", "msg")}
    (workdir / "ledger.json").write_text(json.dumps({**dump, "seen": snapshot.seen}))
    findings = check(snapshot, plans, driver.sent)
    timings = {"fault window": round(window, 1), "settle": round(settle, 1),
               "total": round(time.monotonic() - started, 1)}
    return ChaosResult(cfg, t0, injector.log, injector.exits, snapshot.crashes, unhit,
                       injector.errors, findings, timings, driver.sent.send_errors, workdir)


def _wait_ready(workers: Workers, ledger: Ledger) -> None:
    for worker in workers.live:
        def up(w: Worker = worker) -> bool:
            return ledger.is_ready(w.name) or not w.alive()

        wait_until(up, timeout=90, interval=0.2, message=f"chaos worker {worker.name} to be ready")


def _run_ids(app: ModuleType) -> list[str]:
    """Every run of the workload's functions, from each shard's function index."""
    store = app.steps.runtime.store
    layout = store.keys
    return [raw.decode() for fn in FUNCTIONS for shard in range(layout.shards)
            for raw in store.r.zrange(layout.fn_index(shard, fn), 0, -1)]


def _timers(app: ModuleType) -> list[str]:
    """Every timer member, from each shard's timer set."""
    store = app.steps.runtime.store
    return [m.decode() for shard in range(store.keys.shards)
            for m in store.r.zrange(store.keys.timers(shard), 0, -1)]


def _settle(cfg: ChaosConfig, app: ModuleType, driver: Driver,
            plans: list[OrderPlan]) -> str | None:
    """Keep driving (confirmations, no more cron ticks) until nothing is pending: no message
    in the broker (queued or unacknowledged), no routing or branch timer, no ended run with
    its outbox or timer left, and every other run either legitimately waiting, or with no
    timer at all (stuck: nothing will ever move it; the checker reports it), or waiting for
    such a stuck child. Seen twice in a row, two seconds apart. Returns None once settled,
    else what was still pending at the deadline."""
    store = app.steps.runtime.store
    by_event = {p.event_id: p for p in plans}
    queues = [app.app.conf.task_default_queue + suffix for suffix in QUEUE_SUFFIXES]

    pending_now = ["nothing looked at yet"]

    def busy(why: str) -> bool:
        pending_now[0] = why
        return False

    def idle() -> bool:
        driver.step(cron=False)
        r = store.r
        if queued := sum(r.llen(q) for q in queues) + r.hlen("unacked"):
            return busy(f"{queued} message(s) in the broker")
        timers = _timers(app)
        if routings := [m for m in timers if m.startswith(("e|", "b|"))]:
            return busy(f"routing or branch timers {routings[:5]}")
        timed = {m.split("|")[2] for m in timers if m.startswith("r|")}
        run_ids = _run_ids(app)

        def pending(run_id: str) -> bool:
            """Something (a timer) will still move this unended run."""
            if run_id not in timed:
                return False  # stuck: nothing will ever move it
            run = store.load_run(run_id)
            if run is None or legitimately_waiting(run, by_event.get(run.event_ids[0])):
                return False
            invoke = run.steps.get("charge", {})
            child = invoke.get("child") if invoke.get("status") == "waiting" else None
            return child is None or child in timed or (
                store.r.hget(store.keys.run(child), "status") in ENDED_STATUSES)

        with r.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.hmget(store.keys.run(run_id), "status", "notify")
            states = pipe.execute()
        for run_id, (status, notify) in zip(run_ids, states, strict=True):
            if status in ENDED_STATUSES:
                if notify == b"1" or run_id in timed:
                    return busy(f"ended run {run_id} with its outbox pending ({notify!r}) or "
                                f"its timer left ({[m for m in timers if run_id in m]})")
            elif pending(run_id):
                return busy(f"run {run_id} ({status!r}) has a timer that will move it")
        return True

    deadline = time.monotonic() + cfg.settle_timeout
    streak = 0
    while time.monotonic() < deadline:
        try:
            streak = streak + 1 if idle() else 0
        except Exception as exc:  # a look that failed is a look again
            pending_now[0] = f"the last look failed: {exc!r}"
            streak = 0
        if streak >= 2:
            return None
        time.sleep(2.0)
    return pending_now[0]


def observe(app: ModuleType, ledger: Ledger, plans: list[OrderPlan], driver: Driver,
            injector: Injector) -> Snapshot:
    """Read everything the checker needs from the store and the ledger."""
    steps = app.steps
    store = steps.runtime.store
    runs = {run_id: run for run_id in _run_ids(app)
            if (run := store.load_run(run_id)) is not None}
    event_ids = {p.event_id for p in plans}
    event_ids |= {eid for confirms in driver.sent.confirms.values() for eid, _ in confirms}
    for run in runs.values():
        if run.function_id in (NOTIFY, CRON):
            event_ids.update(run.event_ids)
        ship = run.steps.get("ship")
        if ship is not None and ship.get("status") == "completed":
            event_ids.update(ship["result"])
    events: dict[str, EventInfo | None] = {}
    for event_id in sorted(event_ids):
        try:
            events[event_id] = steps.get_event(event_id)
        except EventNotFound:
            events[event_id] = None
    keys = [k.decode() for k in store.r.scan_iter(match=f"{store.keys.ns}:*", count=1000)]
    with store.r.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.pttl(key)
            pipe.type(key)
        answers = pipe.execute()
    pttls, types = answers[::2], [t.decode() for t in answers[1::2]]
    waiters = {key: [json.loads(v.decode().partition("|")[2])["run_id"]
                     for v in store.r.hvals(key)]
               for key, kind in zip(keys, types, strict=True)
               if kind == "hash" and shard_part(store.keys, key)[1].startswith("w:")}
    kills = [(pid, f.t) for f in injector.log + injector.exits for pid in f.pids]
    outages = [(f.t, f.until or f.t) for f in injector.log
               if f.kind in ("redis-restart", "client-kill")]
    return Snapshot(
        namespace=store.keys.ns, shards=store.keys.shards, runs=runs, events=events,
        keys=list(zip(keys, [int(p) for p in pttls], strict=True)), waiters=waiters,
        timers=_timers(app),
        execs=ledger.entries("exec"), seen=ledger.firsts("seen"),
        crashes=ledger.entries("crash"), tasks=ledger.entries("task"),
        crons=ledger.entries("cron"), messages=ledger.entries("msg"), kills=kills,
        outages=outages,
        taken_at=time.time(),
    )
