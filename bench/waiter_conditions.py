"""Waits matched by ``if_exp`` alone: routing one event that no waiting run accepts.

Run from the repository root (``python -m bench.waiters --if-exp``, see its docstring)::

    .venv/bin/python -m bench.waiters --if-exp            # N = 100,000 waiting runs
    .venv/bin/python -m bench.waiters --if-exp --quick    # N = 10,000

Runs of a function doing::

    ctx.step.wait_for_event("w", event="bench/answer", timeout="1d",
                            if_exp=<the condition>)          # no match

each keep waiting; then ``steps.send("bench/answer", ...)`` with a value none accepts is routed,
timed alone (``steps.runtime.route(event_id)``, the routing task's publish switched off), with
the Redis commands it ran (``INFO commandstats`` diff), the client round trips and the runs it
loaded (``load_run`` calls), for 1 waiting run and for many, three ways:

- **indexed**: ``async.data.n == event.data.n``, which routing turns into an index lookup: the
  event fetches no waiter at all. With N waiting runs; target: the N/1 ratio close to 1.
- **not indexed**: ``async.data.amount >= event.data.minimum``: every waiter on the event name
  is fetched (one ``HGETALL``) and its condition evaluated from what it keeps of its trigger;
  no run is loaded. Fewer runs (``--unindexed-waiters``, 10,000 by default).
- **older waiters**: the indexed condition, with waiters as versions before this kept them
  (no trigger parts, no index): each waiter's run is loaded to evaluate it, as routing did
  for every waiter before. Fewer runs still (``--older-waiters``, 2,000), fewer samples.

Each way has its own namespace and its own app executing in process (eager: no worker), on a
throwaway ``redis-server``. The waiting runs are written through the store's own calls
(``create_run`` with the record ``runtime.runs.new_run`` builds, ``acquire``, ``begin_wait``
with the waiter ``engine.waiters.build_waiter`` builds, ``suspend``: what executing the handler
does, without the Celery machinery, which would take ~5 ms a run), in 4 threads; a run started
for real first checks that the engine registers the same waiter. After the samples, an event
that one run accepts must complete that run (executed in process).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import redis
from celery import Celery

from bench.step_overhead import pct
from celery_steps import CelerySteps, Context
from celery_steps.engine.waiters import build_waiter
from celery_steps.runtime.runs import new_run, run_id_for
from celery_steps.store.base import Suspension, Waiter

RATIO_TARGET = 1.5
DAY_MS = 86_400_000
INDEXED = "async.data.n == event.data.n"
UNINDEXED = "async.data.amount >= event.data.minimum"
NO_MATCH = {"n": -1, "amount": -1}


def commands_total(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


class Scenario:
    """One way of waiting (a condition, current or older waiters) in its own namespace."""

    def __init__(self, url: str, if_exp: str, *, older: bool = False) -> None:
        self.if_exp = if_exp
        self.older = older
        self.client = redis.Redis.from_url(url)
        app = Celery(f"bench_cond_{uuid.uuid4().hex[:6]}", broker=url, set_as_current=False)
        app.conf.update(task_always_eager=True, steps_store_url=url, steps_timer_poller=False,
                        steps_namespace=f"bench_cond_{uuid.uuid4().hex[:8]}")
        self.steps = CelerySteps(app)

        @self.steps.function(id="waits", trigger="bench/wait", retries=0)
        def waits(ctx: Context) -> Any:
            got = ctx.step.wait_for_event("w", event="bench/answer", timeout="1d",
                                          if_exp=ctx.event.data["if_exp"])
            return None if got is None else got.data

        self.fn = waits
        self.runtime = self.steps.runtime
        self.store = self.runtime.store
        self.loaded = 0
        original = self.store.load_run

        def counting(run_id: str) -> Any:
            self.loaded += 1
            return original(run_id)

        self.store.load_run = counting  # type: ignore[method-assign]
        self.proc = f"bench:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.store.beat(self.proc, ttl_ms=4 * 3600_000, holding=[])

    def trigger(self, n: int) -> dict[str, Any]:
        return {"name": "bench/wait", "id": f"wait-{n}", "ts": self.runtime.clock.now_ms(),
                "data": {"n": n, "minimum": 10 + n, "if_exp": self.if_exp}, "user": None,
                "v": None, "traceparent": None}

    def waiter(self, run_id: str, event: dict[str, Any], now: int) -> Waiter:
        built = build_waiter("bench/answer", run_id, self.fn.id, "w", event,
                             condition=self.if_exp, registered_at=now)
        return replace(built, trigger=None, match_path=None, match_key=None) if self.older \
            else built

    def check_faithful(self) -> None:
        """The engine, executing the handler for real, registers the waiter built here."""
        [event_id] = self.steps.send("bench/wait", data={"n": -7, "minimum": 3,
                                                         "if_exp": self.if_exp})
        [run] = self.steps.runs_for_event(event_id)
        probe = {"name": "bench/answer", "data": {"n": -7, "amount": 0}}
        [real] = [w for w in self.store.find_waiters("bench/answer", probe)
                  if w.run_id == run.id]
        record = self.store.load_run(run.id)
        assert record is not None
        mine = build_waiter("bench/answer", run.id, self.fn.id, "w", record.events[0],
                            condition=self.if_exp)
        if replace(real, registered_at=0) != mine:
            raise RuntimeError(f"the engine registered {real}, the bench builds {mine}")
        self.steps.cancel(run.id)

    def park(self, first: int, count: int, threads: int = 4) -> float:
        """Runs ``first .. first+count-1`` waiting; returns the seconds it took."""
        settings = self.runtime.settings
        fn = self.fn

        def one(n: int) -> None:
            now = self.runtime.clock.now_ms()
            event = self.trigger(n)
            run_id = run_id_for(fn.id, event["id"])
            if not self.store.create_run(new_run(now, settings, fn, run_id, [event])):
                raise RuntimeError(f"run {run_id} exists")
            holder = f"{uuid.uuid4().hex[:12]}@{self.proc}"
            status, _ = self.store.acquire(run_id, holder, function_id=fn.id, now=now,
                                           lease_ms=60_000)
            if status != "ok":
                raise RuntimeError(f"acquire {run_id}: {status}")
            state = {"op": "wait_for_event", "pos": 0, "status": "waiting", "started_at": now,
                     "wake_at": now + DAY_MS, "event": "bench/answer", "attempts": 1}
            if not self.store.begin_wait(run_id, holder, "w", state,
                                         (self.waiter(run_id, event, now),)):
                raise RuntimeError(f"begin_wait {run_id} refused")
            if self.store.suspend(run_id, holder,
                                  Suspension("waiting", now + DAY_MS, "w", state)) is not False:
                raise RuntimeError(f"suspend {run_id} did not suspend")

        t0 = time.monotonic()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(first, first + count), chunksize=256))
        return time.monotonic() - t0

    def route_samples(self, samples: int, round_trips: Any) -> dict[str, list[float]]:
        """Route ``samples`` events no waiting run accepts, each timed alone."""
        out: dict[str, list[float]] = {"route": [], "cmds": [], "rts": [], "loaded": []}
        for _ in range(samples):
            self.runtime._publish_route = lambda event_id: None  # type: ignore[method-assign]
            try:
                [event_id] = self.steps.send("bench/answer", data=NO_MATCH)
            finally:
                del self.runtime._publish_route
            c0, rt0, l0 = commands_total(self.client), round_trips.count, self.loaded
            t0 = time.perf_counter()
            started = self.runtime.route(event_id)
            t1 = time.perf_counter()
            out["route"].append(t1 - t0)
            out["rts"].append(round_trips.count - rt0)
            out["cmds"].append(commands_total(self.client) - c0)
            out["loaded"].append(self.loaded - l0)
            if started:
                raise RuntimeError(f"routing started runs {started}")
        return out

    def check_match(self, n: int) -> None:
        """An event that run ``n`` accepts completes it (``amount`` 10 is under every other
        run's ``minimum``)."""
        self.steps.send("bench/answer", data={"n": n, "amount": 10})
        run = self.steps.get_run(run_id_for(self.fn.id, f"wait-{n}"))
        if run.status != "completed" or (run.output or {}).get("n") != n:
            raise RuntimeError(f"run for n={n} is {run.status} with {run.output!r}")


def _row(label: str, waiting: int, s: dict[str, list[float]]) -> str:
    route = s["route"]
    return (f"| {label} | {waiting:,} | {statistics.median(route) * 1e3:.2f} | "
            f"{pct(route, 90) * 1e3:.2f} | {pct(route, 99) * 1e3:.2f} | "
            f"{statistics.median(s['cmds']):,.0f} | {statistics.median(s['rts']):,.0f} | "
            f"{statistics.median(s['loaded']):,.0f} |")


def run(url: str, n_runs: int, args: argparse.Namespace, round_trips: Any) -> int:
    """The whole scenario; prints markdown tables and informational PASS/MISS lines."""
    ways = [
        ("`async.data.n == event.data.n` (indexed)", INDEXED, False, n_runs, args.samples),
        ("`async.data.amount >= event.data.minimum` (not indexed)", UNINDEXED, False,
         min(n_runs, args.unindexed_waiters), args.samples),
        ("`async.data.n == event.data.n`, waiters of an older version", INDEXED, True,
         min(n_runs, args.older_waiters), max(3, args.samples // 4)),
    ]
    rows: list[str] = []
    ratios: list[tuple[str, float]] = []
    for label, if_exp, older, count, samples in ways:
        single = Scenario(url, if_exp, older=older)
        single.check_faithful()
        single.park(0, 1)
        single.route_samples(3, round_trips)  # warm-up
        one = single.route_samples(samples, round_trips)
        single.check_match(0)

        many = Scenario(url, if_exp, older=older)
        print(f"{label}: starting {count:,} waiting runs ...", flush=True)
        took = many.park(0, count)
        print(f"  {count:,} runs waiting after {took:.0f} s ({count / took:,.0f} runs/s)",
              flush=True)
        many.route_samples(2, round_trips)  # warm-up
        lots = many.route_samples(samples, round_trips)
        many.check_match(0 if if_exp == UNINDEXED else count // 2)
        rows += [_row(label, 1, one), _row(label, count, lots)]
        ratios.append((f"{label}, {count:,} vs 1",
                       statistics.median(lots["route"]) / statistics.median(one["route"])))
        many.client.flushdb()  # free the memory before the next way

    print("\n## one event no waiting run accepts, 1 vs N waiting runs (if_exp only, no match)\n")
    print("| condition | waiting runs | route p50 ms | p90 | p99 | Redis commands | "
          "round trips | runs loaded |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row)
    print("\n| ratio N / 1, p50 routing | |")
    print("|---|---:|")
    for label, ratio in ratios:
        print(f"| {label} | {ratio:,.2f} |")
    print("\nan event one run accepts completed that run, in every way and size: yes")
    indexed = ratios[0][1]
    verdict = "PASS" if indexed <= RATIO_TARGET else "MISS"
    print(f"\n{verdict}  indexed if_exp: N/1 p50 routing ratio {indexed:.2f} "
          f"(target: flat, <= {RATIO_TARGET:g})")
    return 0
