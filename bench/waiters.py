"""Waiters: event-to-resume latency with 1 waiting run and with N waiting runs.

Run from the repository root::

    .venv/bin/python -m bench.waiters                  # N = 100,000 waiting runs
    .venv/bin/python -m bench.waiters --quick          # N = 10,000
    .venv/bin/python -m bench.waiters --waiters 20000  # any N

It starts its own throwaway ``redis-server`` (free TCP port, ``--save '' --appendonly no``,
killed at exit), a Celery app whose broker, backend and store are that Redis, and an in-thread
worker (threads pool, concurrency 8). The function::

    @steps.function(id="waiter", trigger="bench/wait")
    def waiter(ctx):
        ev = ctx.step.wait_for_event("w", event="bench/answer", timeout="1d", match="data.n")

is started by ``steps.send`` (batches of 1,000), each run with its own ``data.n``, and runs
until it waits. Then, for 1 waiting run and for N waiting runs, ~20 samples each of:

- **routing cost**: ``steps.send("bench/answer", data={"n": k})`` with the routing task's
  publish switched off, then ``steps.runtime.route(event_id)`` timed alone in this thread (finding
  the waiter, resolving its step, publishing the resume task), plus the Redis commands it
  ran (``INFO commandstats`` diff) and the client round trips. The resume task is published
  as usual but to a queue no worker reads (then re-sent for real once timed), so the
  in-thread worker does not start executing the run while routing is still being timed;
- **event to completed**: from ``steps.send("bench/answer", data={"n": k})`` (routing task
  published as usual) until the run's function task returns ``completed`` in the worker
  (a ``task_postrun`` marker the bench ``BLPOP``s on; not polling).

For "1 waiting run", each sample first starts one run and waits until it is ``waiting``, so
exactly one waiter exists when the event is sent. For "N", k is drawn at random among the N.
Target (informational): flat, i.e. the N/1 ratio close to 1.

With ``--if-exp``, another scenario (``bench/waiter_conditions.py``, whose docstring has the
details): waits with an ``if_exp`` and no ``match``, and one event that none accepts, routed
against 1 and N waiting runs; routing cost, Redis commands, round trips and runs loaded per
event, and the N/1 ratio, for an ``if_exp`` equality (indexed), a comparison (not indexed)
and waiters as older versions stored them (each run loaded)::

    .venv/bin/python -m bench.waiters --if-exp            # N = 100,000
    .venv/bin/python -m bench.waiters --if-exp --quick    # N = 10,000
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from typing import Any

import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun

from bench.step_overhead import RedisServer, pct
from celery_steps import CelerySteps, Context
from celery_steps.runtime.runs import run_id_for

DONE = "bench:done:"
PARKED = "bench.parked"
SETTLE = 0.05  # idle time before each timed sample, so the worker has finished the last one
RATIO_TARGET = 1.5  # "flat": N-waiter p50 within 1.5x of the 1-waiter p50


class RoundTrips:
    """Counts redis-py command writes made by the main thread (one per command, pipeline or
    EVALSHA), so the in-thread worker's own traffic is left out."""

    count = 0
    _orig: Any = None

    @classmethod
    def install(cls) -> None:
        from redis.connection import AbstractConnection

        cls._orig = AbstractConnection.send_packed_command

        main = threading.main_thread().ident

        def counting(self: Any, command: Any, check_health: bool = True) -> None:
            if threading.get_ident() == main:  # the bench's thread only, not the worker's
                cls.count += 1
            cls._orig(self, command, check_health)

        AbstractConnection.send_packed_command = counting  # type: ignore[method-assign]

    @classmethod
    def uninstall(cls) -> None:
        from redis.connection import AbstractConnection

        AbstractConnection.send_packed_command = cls._orig  # type: ignore[method-assign]


def commands_total(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info",))


class Bench:
    def __init__(self, url: str, concurrency: int) -> None:
        self.url = url
        self.app = Celery("bench_waiters", broker=url, backend=url, set_as_current=False)
        self.app.conf.update(
            steps_store_url=url,
            steps_namespace="bench_wait",
            task_serializer="json",
            accept_content=["json"],
            broker_connection_retry_on_startup=True,
            worker_hijack_root_logger=False,
            worker_prefetch_multiplier=4,
        )
        self.steps = CelerySteps(self.app)
        self.concurrency = concurrency
        self.client = redis.Redis.from_url(url)
        self.suspended = 0
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.parked_counts: list[int] = []
        self._lock = threading.Lock()

        @self.steps.function(id="waiter", trigger="bench/wait", retries=0)
        def waiter(ctx: Context) -> dict[str, Any]:
            ev = ctx.step.wait_for_event("w", event="bench/answer", timeout="1d", match="data.n")
            return {"n": ctx.event.data["n"], "got": None if ev is None else ev.data["n"]}

        self.fn = waiter
        task_name = waiter.task_name
        marker = redis.Redis.from_url(url)

        @task_postrun.connect(weak=False)
        def on_postrun(sender: Any = None, args: Any = None, retval: Any = None, **_: Any) -> None:
            if sender is None:
                return
            with self._lock:
                self.outcomes[(sender.name, str(retval))] += 1
            if sender.name != task_name:
                return
            if retval == "completed":
                marker.lpush(DONE + args[0], "1")
            elif retval == "suspended":
                with self._lock:
                    self.suspended += 1

    # -- helpers ---------------------------------------------------------------------------
    def run_id(self, event_id: str) -> str:
        return run_id_for("waiter", event_id)

    def status(self, run_id: str) -> str:
        raw = self.client.hget(self.steps.runtime.store.run_key(run_id), "status")
        return raw.decode() if raw else "?"

    def start_one(self, n: int) -> str:
        (event_id,) = self.steps.send("bench/wait", data={"n": n})
        run_id = self.run_id(event_id)
        deadline = time.monotonic() + 30
        while self.status(run_id) != "waiting":
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} is {self.status(run_id)}, not waiting")
            time.sleep(0.002)
        return run_id

    def route_only(self, n: int, run_id: str) -> tuple[float, int, int]:
        """Time ``steps.runtime.route`` alone; returns (seconds, Redis commands, round trips)."""
        self.steps.runtime._publish_route = lambda event_id: None  # type: ignore[method-assign]
        try:
            (event_id,) = self.steps.send("bench/answer", data={"n": n})
        finally:
            del self.steps.runtime._publish_route
        parked: list[tuple[str, str]] = []
        app = self.app

        def park(function_id: str, resumed: str) -> None:
            # the same publish, to a queue no worker reads: the in-thread worker must not
            # start executing the resumed run while routing is being timed in this process
            parked.append((function_id, resumed))
            app.tasks[self.fn.task_name].apply_async(args=[resumed], queue=PARKED)

        time.sleep(SETTLE)
        self.steps.runtime.enqueue = park  # type: ignore[method-assign]
        try:
            c0 = commands_total(self.client)
            rt0 = RoundTrips.count
            t0 = time.perf_counter()
            self.steps.runtime.route(event_id)
            t1 = time.perf_counter()
            rt1 = RoundTrips.count
            c1 = commands_total(self.client)
        finally:
            del self.steps.runtime.enqueue
        self.client.delete(PARKED)
        if set(parked) != {("waiter", run_id)}:
            raise RuntimeError(f"routing resumed {parked}, not {run_id}")
        self.parked_counts.append(len(parked))
        self.steps.runtime.enqueue("waiter", run_id)
        self.await_done(run_id)
        return t1 - t0, c1 - c0, rt1 - rt0

    def end_to_end(self, n: int, run_id: str) -> float:
        time.sleep(SETTLE)
        t0 = time.perf_counter()
        self.steps.send("bench/answer", data={"n": n})
        self.client.blpop([DONE + run_id], timeout=30)
        t1 = time.perf_counter()
        run = self.steps.get_run(run_id)
        if run.status != "completed" or (run.output or {}).get("got") != n:
            raise RuntimeError(f"run {run_id} ended {run.status} with {run.output!r}")
        return t1 - t0

    def await_done(self, run_id: str) -> None:
        if not self.client.blpop([DONE + run_id], timeout=30):
            raise TimeoutError(f"run {run_id} did not complete")
        if self.status(run_id) != "completed":
            raise RuntimeError(f"run {run_id} is {self.status(run_id)}")

    # -- phases ------------------------------------------------------------------------------
    def one_waiter(self, samples: int, base: int) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"route": [], "cmds": [], "rts": [], "e2e": []}
        for s in range(samples):
            n = base + 2 * s
            run_id = self.start_one(n)
            self.assert_waiting(1)
            t, c, rt = self.route_only(n, run_id)
            out["route"].append(t)
            out["cmds"].append(c)
            out["rts"].append(rt)
            run_id = self.start_one(n + 1)
            self.assert_waiting(1)
            out["e2e"].append(self.end_to_end(n + 1, run_id))
        return out

    def assert_waiting(self, expected: int) -> None:
        """The number of waiter index hashes for bench/answer (one per waiting run here)."""
        found = len(
            set(self.client.scan_iter(match="bench_wait:w:bench/answer:m:*", count=1000))
        )  # SCAN may repeat keys
        if found != expected:
            raise RuntimeError(f"expected {expected} waiters, found {found}")

    def create(self, n_runs: int, limit_s: float) -> tuple[int, float]:
        """Start n_runs waiting runs; returns (runs started, seconds until all wait)."""
        t0 = time.monotonic()
        sent = 0
        ids: list[str] = []
        last_report = t0
        for start in range(0, n_runs, 1000):
            batch = [
                {"name": "bench/wait", "data": {"n": i}}
                for i in range(start, min(n_runs, start + 1000))
            ]
            ids.extend(self.steps.send(batch))
            sent += len(batch)
            # keep the broker backlog bounded, so sending does not starve the worker
            # (over ~route_sweep_after = 30 s of backlog, the routing sweep re-routes events)
            while sent - self.suspended > 1000:
                time.sleep(0.05)
            if time.monotonic() - last_report > 20:
                last_report = time.monotonic()
                print(
                    f"  ... {self.suspended:,}/{sent:,} waiting after {last_report - t0:.0f} s",
                    flush=True,
                )
            if time.monotonic() - t0 > limit_s:
                print(
                    f"  stopped sending at {sent:,} runs: over the {limit_s:.0f} s budget",
                    flush=True,
                )
                break
        while self.suspended < sent:
            if time.monotonic() - t0 > limit_s + 120:
                break
            time.sleep(0.1)
        took = time.monotonic() - t0
        statuses: Counter[str] = Counter()
        keys = [self.steps.runtime.store.run_key(self.run_id(e)) for e in ids]
        for start in range(0, len(keys), 5000):
            with self.client.pipeline(transaction=False) as pipe:
                for key in keys[start : start + 5000]:
                    pipe.hget(key, "status")
                statuses.update((s or b"?").decode() for s in pipe.execute())
        if statuses.get("waiting", 0) != len(ids):
            print(f"  statuses: {dict(statuses)}", flush=True)
        return statuses.get("waiting", 0), took

    def many_waiters(self, samples: int, n_runs: int) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"route": [], "cmds": [], "rts": [], "e2e": []}
        picks = random.sample(sorted(self._ids_by_n), 2 * samples)
        for s in range(samples):
            k = picks[2 * s]
            t, c, rt = self.route_only(k, self.run_id_for_n(k))
            out["route"].append(t)
            out["cmds"].append(c)
            out["rts"].append(rt)
            k = picks[2 * s + 1]
            out["e2e"].append(self.end_to_end(k, self.run_id_for_n(k)))
        return out

    _ids_by_n: dict[int, str]

    def run_id_for_n(self, n: int) -> str:
        return self._ids_by_n[n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.waiters", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="N = 10,000 waiting runs")
    parser.add_argument("--waiters", type=int, help="N waiting runs (default 100,000)")
    parser.add_argument("--samples", type=int, default=20, help="samples per figure (20)")
    parser.add_argument(
        "--budget", type=float, default=480.0, help="seconds allowed for starting the N runs (480)"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="worker threads (8)")
    parser.add_argument("--redis-server", help="redis-server binary (default: from PATH)")
    parser.add_argument("--if-exp", action="store_true",
                        help="the if_exp scenario instead (bench/waiter_conditions.py)")
    parser.add_argument("--unindexed-waiters", type=int, default=10_000,
                        help="--if-exp: waiting runs for the unindexed condition (10,000)")
    parser.add_argument("--older-waiters", type=int, default=2_000,
                        help="--if-exp: waiting runs with waiters of an older version (2,000)")
    args = parser.parse_args(argv)
    n_runs = args.waiters or (10_000 if args.quick else 100_000)

    logging.basicConfig(level=logging.WARNING)
    server = RedisServer(args.redis_server).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if args.if_exp:
            return _run_if_exp(server.url, n_runs, args)
        return _run(server.url, n_runs, args)
    finally:
        server.stop()


def _run_if_exp(url: str, n_runs: int, args: argparse.Namespace) -> int:
    from bench import waiter_conditions

    load_start = os.getloadavg()
    info = redis.Redis.from_url(url).info("server")
    print(
        f"# celery-steps waits matched by if_exp  ({time.strftime('%Y-%m-%d %H:%M')}, "
        f"{os.cpu_count()} cpu, Python {sys.version.split()[0]}, redis {info['redis_version']} "
        f"on {url}, N={n_runs:,}, samples={args.samples}, load {load_start[0]:.2f})",
        flush=True,
    )
    RoundTrips.install()
    try:
        code = waiter_conditions.run(url, n_runs, args, RoundTrips)
    finally:
        RoundTrips.uninstall()
    load_end = os.getloadavg()
    print(f"\nload average at start {load_start[0]:.2f}, at end {load_end[0]:.2f} "
          f"(on {os.cpu_count()} cpu)")
    return code


def _ms(values: list[float]) -> str:
    return (
        f"{statistics.median(values) * 1e3:.2f} | {pct(values, 90) * 1e3:.2f} | "
        f"{pct(values, 99) * 1e3:.2f}"
    )


def _run(url: str, n_runs: int, args: argparse.Namespace) -> int:
    load_start = os.getloadavg()
    bench = Bench(url, args.concurrency)
    client = bench.client
    info = client.info("server")
    print(
        f"# celery-steps waiters  ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cpu, "
        f"Python {sys.version.split()[0]}, redis {info['redis_version']} on {url}, "
        f"N={n_runs:,}, samples={args.samples}, worker threads={args.concurrency}, "
        f"load {load_start[0]:.2f})",
        flush=True,
    )
    RoundTrips.install()
    with start_worker(
        bench.app,
        pool="threads",
        concurrency=args.concurrency,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ):
        bench.one_waiter(3, base=50_000_000)  # warm-up
        one = bench.one_waiter(args.samples, base=60_000_000)
        print("1-waiter phase done", flush=True)

        mem0 = client.info("memory")["used_memory"]
        print(f"starting {n_runs:,} waiting runs (batches of 1,000) ...", flush=True)
        bench.suspended = 0
        bench.outcomes.clear()
        waiting, took = bench.create(n_runs, args.budget)
        creation_outcomes = dict(bench.outcomes)
        mem1 = client.info("memory")["used_memory"]
        print(
            f"{waiting:,} runs waiting after {took:.0f} s ({waiting / took:,.0f} runs/s)",
            flush=True,
        )
        # the event ids are random: map n -> run id through the waiter index hashes
        bench._ids_by_n = ids_by_n(client, n_runs)
        bench.assert_waiting(len(bench._ids_by_n))
        bench.outcomes.clear()
        bench.parked_counts.clear()
        many = bench.many_waiters(args.samples, len(bench._ids_by_n))
        time.sleep(1.0)
        sampling_outcomes = dict(bench.outcomes)
        parked_counts = list(bench.parked_counts)
        n_eff = len(bench._ids_by_n)
    RoundTrips.uninstall()

    print(f"\n## event to resume, 1 vs {n_eff:,} waiting runs ({args.samples} samples each; ms)\n")
    print("| figure | waiting runs | p50 | p90 | p99 |")
    print("|---|---:|---:|---:|---:|")
    print(f"| `steps.runtime.route(event_id)` alone | 1 | {_ms(one['route'])} |")
    print(f"| `steps.runtime.route(event_id)` alone | {n_eff:,} | {_ms(many['route'])} |")
    print(f"| `steps.send` -> run `completed` | 1 | {_ms(one['e2e'])} |")
    print(f"| `steps.send` -> run `completed` | {n_eff:,} | {_ms(many['e2e'])} |")
    r_route = statistics.median(many["route"]) / statistics.median(one["route"])
    r_e2e = statistics.median(many["e2e"]) / statistics.median(one["e2e"])
    print()
    print("| figure | 1 waiter | N waiters |")
    print("|---|---:|---:|")
    print(
        f"| Redis commands per route (executed, incl. inside Lua; median) | "
        f"{statistics.median(one['cmds']):.0f} | {statistics.median(many['cmds']):.0f} |"
    )
    print(
        f"| client round trips per route (median) | {statistics.median(one['rts']):.0f} | "
        f"{statistics.median(many['rts']):.0f} |"
    )
    print(f"| ratio N / 1, p50 routing | | {r_route:.2f} |")
    print(f"| ratio N / 1, p50 event to completed | | {r_e2e:.2f} |")
    per_run = (mem1 - mem0) / max(1, waiting)
    print(
        f"\nstarting the N runs: {took:.0f} s, {waiting / took:,.0f} runs/s; used_memory "
        f"+{(mem1 - mem0) / 2**20:,.0f} MiB = {per_run:,.0f} B per waiting run (everything: "
        f"run, steps, waiter index, timer, run indexes, its event keys)"
    )

    print(
        "tasks executed while starting them (task, returned): "
        + ", ".join(
            f"{t.rsplit('.', 1)[-1]} {r} {c:,}" for (t, r), c in sorted(creation_outcomes.items())
        )
    )
    print(
        f"tasks executed during the {args.samples} + {args.samples} N-waiter samples: "
        + ", ".join(
            f"{t.rsplit('.', 1)[-1]} {r} {c:,}" for (t, r), c in sorted(sampling_outcomes.items())
        )
    )
    print(
        "resume tasks published while one timed `steps.runtime.route` ran (per sample): "
        + ", ".join(map(str, parked_counts))
    )

    print("\n## targets (informational)\n")
    for label, ratio in (("routing", r_route), ("event to completed", r_e2e)):
        verdict = "PASS" if ratio <= RATIO_TARGET else "MISS"
        print(f"{verdict}  {label}: N/1 p50 ratio {ratio:.2f} (target: flat, <= {RATIO_TARGET:g})")
    load_end = os.getloadavg()
    print(
        f"\nload average at start {load_start[0]:.2f}, at end {load_end[0]:.2f} "
        f"(on {os.cpu_count()} cpu)"
    )
    return 0


def ids_by_n(client: redis.Redis, n_runs: int) -> dict[int, str]:
    """n -> run id, read back from the waiter index hashes (``...:m:data.n=<n>``)."""
    import json

    out: dict[int, str] = {}
    prefix = "bench_wait:w:bench/answer:m:data.n="
    keys = [k.decode() for k in client.scan_iter(match=prefix + "*", count=5000)]
    for start in range(0, len(keys), 5000):
        chunk = keys[start : start + 5000]
        with client.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.hgetall(key)
            for key, entries in zip(chunk, pipe.execute(), strict=True):
                for raw in entries.values():
                    waiter = json.loads(raw)
                    out[int(key[len(prefix) :])] = waiter["run_id"]
    return {n: r for n, r in out.items() if n < n_runs}


if __name__ == "__main__":
    sys.exit(main())
