"""Per-step overhead of celery-steps, against a Celery chain and a bare EVALSHA.

Run from the repository root::

    .venv/bin/python -m bench.step_overhead            # full run (~30 s)
    .venv/bin/python -m bench.step_overhead --quick    # short run (~10 s)
    .venv/bin/python -m bench.step_overhead --profile  # also cProfile 50-step runs in-process

It starts its own throwaway ``redis-server`` (free TCP port, ``--save '' --appendonly no``,
killed at exit) and, in one process, measures:

(a) the floor: one EVALSHA round trip of ``return 1`` with one key (median, p99);
(b) a celery-steps function with 10 and with 50 no-op ``ctx.step.run`` steps, executed by a
    real in-thread Celery worker (solo pool), timed from ``fn.invoke()`` to
    ``steps.wait_for_run()`` returning; marginal cost per step = (t50 - t10) / 40;
(c) a plain Celery chain of 10 and 50 no-op links on the same broker and worker;
    marginal cost per link = (t50 - t10) / 40;
plus Redis commands per step / per link (``INFO commandstats`` diffs, marginal between the
10- and 50-long variants) and, as a cross-check, the same steps function executed in-process
(``task_always_eager``, no broker) to isolate the engine's own cost.

Targets (informational; the script never fails on a miss): step <= 3x floor,
link >= 5x step. See bench/README.md for the method and its fairness choices.
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import io
import logging
import os
import pstats
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery, chain
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun

from celery_steps import CelerySteps, Context

SHORT, LONG = 10, 50
STEP_TARGET = 3.0  # per-step cost <= 3x the EVALSHA floor
LINK_TARGET = 5.0  # per-link cost >= 5x the per-step cost
DONE_PREFIX = "bench:done:"
ROUND_TRIPS = "~round trips"


# -- throwaway redis -------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server on a free port, no persistence, killed at exit."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or shutil.which("redis-server") or "/usr/bin/redis-server"
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--maxmemory-policy",
                "noeviction",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        atexit.register(self.stop)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)
        client.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


# -- statistics ------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


# -- workloads -------------------------------------------------------------------------------
def noop_step(i: int) -> dict[str, Any]:
    return {"i": i, "ok": True}


def make_app(url: str, *, eager: bool = False, namespace: str = "bench") -> Celery:
    app = Celery(
        "bench",
        broker=url if not eager else "memory://",
        backend=url if not eager else "cache+memory://",
        set_as_current=False,
    )
    app.conf.update(
        steps_store_url=url,
        steps_namespace=namespace,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_prefetch_multiplier=1,
        task_always_eager=eager,
    )
    return app


def install_steps(app: Celery) -> tuple[CelerySteps, Any]:
    steps = CelerySteps(app)

    @steps.function(id="bench-steps", trigger="bench/run", retries=0)
    def bench_steps(ctx: Context) -> dict[str, Any]:
        n = int(ctx.event.data["n"])
        last: dict[str, Any] = {}
        for i in range(n):
            last = ctx.step.run("noop", noop_step, i)
        return {"n": n, "last": last}

    return steps, bench_steps


def install_chain_tasks(app: Celery) -> dict[str, Any]:
    def body(prev: dict[str, Any] | None = None) -> dict[str, Any]:
        i = (prev or {}).get("i", -1) + 1
        return {"i": i, "ok": True}

    floor_client: list[redis.Redis] = []

    def evalsha_loop(n: int) -> int:
        """The floor under the worker's own conditions: n bare EVALSHAs in one task."""
        if not floor_client:
            floor_client.append(redis.Redis.from_url(app.conf.broker_url))
        script = floor_client[0].register_script("return 1")
        for _ in range(n):
            script(keys=["bench:floor"])
        return n

    return {
        "floor": app.task(name="bench.floor", ignore_result=True)(evalsha_loop),
        # the fair comparison: like the steps function's own task, no result is stored
        "noop": app.task(name="bench.noop", ignore_result=True)(body),
        "last": app.task(name="bench.last", ignore_result=True)(body),
        # Celery's default: every link stores its result in the backend
        "noop_r": app.task(name="bench.noop_r", ignore_result=False)(body),
        "last_r": app.task(name="bench.last_r", ignore_result=False)(body),
    }


def connect_done_signal(app: Celery, client: redis.Redis, steps_task: str) -> None:
    """After the *worker* has fully finished the last task of a workload (result stored,
    message acked or about to be), push a marker the bench BLPOPs on: precise end time
    without a polling loop competing with the worker thread for the GIL."""

    def on_postrun(
        sender: Any = None,
        task_id: str | None = None,
        task: Any = None,
        args: Any = None,
        retval: Any = None,
        **_: Any,
    ) -> None:
        if getattr(task, "app", None) is not app:
            return
        name = getattr(task, "name", "")
        if name == steps_task and retval in ("completed", "failed"):
            client.lpush(DONE_PREFIX + str(args[0]), "1")
        elif name in ("bench.last", "bench.last_r", "bench.floor"):
            client.lpush(DONE_PREFIX + str(task_id), "1")

    task_postrun.connect(on_postrun, weak=False)


@dataclass
class Bench:
    steps: CelerySteps
    fn: Any
    tasks: dict[str, Any]
    client: redis.Redis

    def run_steps(self, n: int) -> float:
        t0 = time.perf_counter()
        run_id = self.fn.invoke({"n": n})
        if self.client.blpop([DONE_PREFIX + run_id], timeout=120) is None:
            raise TimeoutError(f"steps run {run_id} did not finish")
        run = self.steps.wait_for_run(run_id, timeout=30)
        t1 = time.perf_counter()
        if run.status != "completed" or len(run.steps) != n:
            raise RuntimeError(f"steps run {run_id} ended {run.status}: {run.error}")
        return t1 - t0

    def run_floor_task(self, n: int) -> float:
        t0 = time.perf_counter()
        res = self.tasks["floor"].apply_async(args=[n])
        if self.client.blpop([DONE_PREFIX + res.id], timeout=120) is None:
            raise TimeoutError(f"floor task {res.id} did not finish")
        return time.perf_counter() - t0

    def run_chain(self, n: int, stored: bool = False) -> float:
        noop, last = (
            (self.tasks["noop_r"], self.tasks["last_r"])
            if stored
            else (self.tasks["noop"], self.tasks["last"])
        )
        t0 = time.perf_counter()
        res = chain(*[noop.s() for _ in range(n - 1)], last.s()).apply_async()
        if self.client.blpop([DONE_PREFIX + res.id], timeout=120) is None:
            raise TimeoutError(f"chain {res.id} did not finish")
        t1 = time.perf_counter()
        if stored:
            value = res.get(timeout=30)
            if value != {"i": n - 1, "ok": True}:
                raise RuntimeError(f"chain returned {value!r}")
        return t1 - t0


def measure_floor(client: redis.Redis, calls: int) -> list[float]:
    script = client.register_script("return 1")
    for _ in range(min(500, calls)):
        script(keys=["bench:floor"])
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        script(keys=["bench:floor"])
        samples.append(time.perf_counter() - t0)
    return samples


class RoundTrips:
    """Counts client->Redis writes in this process (redis-py's ``send_packed_command``: one
    per command, one per pipeline/transaction). The worker runs in-thread, so this sees the
    worker, the steps store and kombu alike; a MULTI..EXEC pipeline or an EVALSHA is one."""

    count = 0
    _original: Any = None

    @classmethod
    def install(cls) -> None:
        """Only while counting: the wrapper costs a little on every command."""
        from redis.connection import AbstractConnection

        original = cls._original = AbstractConnection.send_packed_command

        def counted(self: Any, command: Any, check_health: bool = True) -> None:
            cls.count += 1
            return original(self, command, check_health)

        AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]

    @classmethod
    def uninstall(cls) -> None:
        from redis.connection import AbstractConnection

        if cls._original is not None:
            AbstractConnection.send_packed_command = cls._original  # type: ignore[method-assign]
            cls._original = None


def commandstats(client: redis.Redis) -> dict[str, int]:
    raw = client.info("commandstats")
    out: dict[str, int] = {}
    for key, value in raw.items():
        name = key.removeprefix("cmdstat_")
        if name not in ("info",):
            out[name] = int(value["calls"])
    return out


def count_commands(client: redis.Redis, work: Callable[[], Any]) -> dict[str, int]:
    """Redis commands issued during ``work()`` (INFO itself excluded; the bench's own
    BLPOP wait and the done-marker LPUSH are a constant per run)."""
    before = commandstats(client)
    trips = RoundTrips.count
    work()
    time.sleep(0.05)  # let late acks land
    trips = RoundTrips.count - trips
    after = commandstats(client)
    diff = {
        k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) - before.get(k, 0)
    }
    diff[ROUND_TRIPS] = trips
    return diff


def marginal_commands(
    client: redis.Redis, work: Callable[[int], Any], reps: int
) -> tuple[float, float, dict[str, float]]:
    """Per extra step/link: (commands Redis executed, client round trips, by command)."""
    shorts = [count_commands(client, lambda: work(SHORT)) for _ in range(reps)]
    longs = [count_commands(client, lambda: work(LONG)) for _ in range(reps)]
    names = {k for d in shorts + longs for k in d}
    per: dict[str, float] = {}
    for name in sorted(names):
        s = statistics.median(d.get(name, 0) for d in shorts)
        l_ = statistics.median(d.get(name, 0) for d in longs)
        if l_ - s:
            per[name] = (l_ - s) / (LONG - SHORT)
    trips = per.pop(ROUND_TRIPS, 0.0)
    return sum(per.values()), trips, per


def timed(fn: Callable[[int], float], n: int, runs: int) -> list[float]:
    return [fn(n) for _ in range(runs)]


def marginal(t_short: list[float], t_long: list[float], q: float = 50) -> float:
    """(t_long - t_short) / (LONG - SHORT) at percentile q of each (median by default)."""
    return (
        (pct(t_long, q) - pct(t_short, q)) / (LONG - SHORT)
        if q != 50
        else ((statistics.median(t_long) - statistics.median(t_short)) / (LONG - SHORT))
    )


# -- in-process engine cost and profile ------------------------------------------------------
class EagerBench:
    """The same function executed in-process (``task_always_eager``, no broker, no worker):
    the engine's own cost per step, against the same Redis."""

    def __init__(self, url: str) -> None:
        self.app = make_app(url, eager=True, namespace="bench_eager")
        self.steps, self.fn = install_steps(self.app)

    def run_steps(self, n: int) -> float:
        t0 = time.perf_counter()
        run_id = self.fn.invoke({"n": n})
        run = self.steps.wait_for_run(run_id, timeout=30)
        t1 = time.perf_counter()
        if run.status != "completed" or len(run.steps) != n:
            raise RuntimeError(f"eager run ended {run.status}: {run.error}")
        return t1 - t0

    def profile(self, runs: int) -> cProfile.Profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(runs):
            self.run_steps(LONG)
        prof.disable()
        return prof


def print_profile(prof: cProfile.Profile, runs: int, top: int) -> None:
    total_steps = runs * LONG
    print(
        f"\n## cProfile: {runs} in-process runs x {LONG} steps "
        f"(per-step = cumulative time / {total_steps} steps; includes per-run overhead)\n"
    )
    for sort in ("cumulative", "tottime"):
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.sort_stats(sort)
        print(f"### top {top} by {sort}, µs per step")
        print(f"{'ncalls/step':>11} {'tottime':>9} {'cumtime':>9}  function")
        entries = []
        for func, (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            entries.append((func, nc, tt, ct))
        key = (lambda e: e[3]) if sort == "cumulative" else (lambda e: e[2])
        for func, nc, tt, ct in sorted(entries, key=key, reverse=True)[:top]:
            filename, line, name = func
            where = f"{_short_path(filename)}:{line}({name})" if line else name
            print(
                f"{nc / total_steps:11.2f} {tt / total_steps * 1e6:9.1f} "
                f"{ct / total_steps * 1e6:9.1f}  {where}"
            )
        print()


def _short_path(filename: str) -> str:
    for marker in ("site-packages/", "/celery_steps/", "/bench/", "lib/python"):
        if marker in filename:
            idx = filename.index(marker)
            return filename[idx + (len(marker) if marker == "site-packages/" else 1) :]
    return os.path.basename(filename)


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.step_overhead", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a short run (~10 s)")
    parser.add_argument("--runs", type=int, help="timed runs per workload (default 30; 6 quick)")
    parser.add_argument("--floor-calls", type=int, help="EVALSHA samples (default 20000)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile 50-step runs in-process and print the top costs",
    )
    parser.add_argument("--top", type=int, default=30, help="profile rows to print")
    parser.add_argument("--redis-server", help="redis-server binary (default: from PATH)")
    args = parser.parse_args(argv)
    runs = args.runs or (6 if args.quick else 30)
    floor_calls = args.floor_calls or (2000 if args.quick else 20000)
    cmd_reps = 1 if args.quick else 3

    logging.basicConfig(level=logging.WARNING)
    server = RedisServer(args.redis_server).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return _run(server, runs, floor_calls, cmd_reps, args)
    finally:
        server.stop()


def _run(
    server: RedisServer, runs: int, floor_calls: int, cmd_reps: int, args: argparse.Namespace
) -> int:
    url = server.url
    load_start = os.getloadavg()
    client = redis.Redis.from_url(url)
    info = client.info("server")
    print(
        f"# celery-steps step overhead  ({time.strftime('%Y-%m-%d %H:%M')}, "
        f"{os.cpu_count()} cpu, Python {sys.version.split()[0]}, "
        f"redis {info['redis_version']} on {url}, runs={runs}, floor calls={floor_calls})"
    )

    app = make_app(url)
    steps, fn = install_steps(app)
    tasks = install_chain_tasks(app)
    connect_done_signal(app, client, fn.task_name)
    eager = EagerBench(url)
    bench = Bench(steps, fn, tasks, client)

    with start_worker(
        app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=30
    ):
        # warm up every path (imports, script loading, connections)
        for _ in range(3):
            bench.run_steps(SHORT), bench.run_steps(LONG)
            bench.run_chain(SHORT), bench.run_chain(LONG)
            bench.run_chain(SHORT, stored=True), bench.run_chain(LONG, stored=True)
            eager.run_steps(SHORT), eager.run_steps(LONG)
            bench.run_floor_task(SHORT), bench.run_floor_task(LONG)

        floor = measure_floor(client, 500)  # warm-up only
        floor = []

        # interleaved, so drift hits every workload alike
        t: dict[str, list[float]] = {
            k: [] for k in ("s10", "s50", "c10", "c50", "r10", "r50", "e10", "e50", "f10", "f50")
        }
        for _ in range(runs):
            floor.extend(measure_floor(client, max(1, floor_calls // runs)))
            t["f10"].append(bench.run_floor_task(SHORT))
            t["f50"].append(bench.run_floor_task(LONG))
            t["s10"].append(bench.run_steps(SHORT))
            t["c10"].append(bench.run_chain(SHORT))
            t["r10"].append(bench.run_chain(SHORT, stored=True))
            t["e10"].append(eager.run_steps(SHORT))
            t["s50"].append(bench.run_steps(LONG))
            t["c50"].append(bench.run_chain(LONG))
            t["r50"].append(bench.run_chain(LONG, stored=True))
            t["e50"].append(eager.run_steps(LONG))

        floor_after = measure_floor(client, floor_calls // 4)

        RoundTrips.install()
        cmd_step, rt_step, cmd_step_by = marginal_commands(client, bench.run_steps, cmd_reps)
        cmd_link, rt_link, cmd_link_by = marginal_commands(client, bench.run_chain, cmd_reps)
        cmd_rlink, rt_rlink, cmd_rlink_by = marginal_commands(
            client, lambda n: bench.run_chain(n, stored=True), cmd_reps
        )
        RoundTrips.uninstall()

    prof = eager.profile(max(10, runs)) if args.profile else None
    load_end = os.getloadavg()

    step = marginal(t["s10"], t["s50"])
    link = marginal(t["c10"], t["c50"])
    rlink = marginal(t["r10"], t["r50"])
    f_med, f_p99 = statistics.median(floor), pct(floor, 99)

    print("\n## wall time per run (ms): median [p10-p90] over", runs, "runs\n")
    print(
        f"| workload | {SHORT} | {LONG} | marginal per step/link (µs), medians | same, from p10s |"
    )
    print("|---|---:|---:|---:|---:|")

    def row(label: str, a: list[float], b: list[float]) -> None:
        def fmt(v: list[float]) -> str:
            return (
                f"{statistics.median(v) * 1e3:.2f} [{pct(v, 10) * 1e3:.2f}-{pct(v, 90) * 1e3:.2f}]"
            )

        print(
            f"| {label} | {fmt(a)} | {fmt(b)} | {us(marginal(a, b))} | {us(marginal(a, b, 10))} |"
        )

    row("celery-steps function, worker", t["s10"], t["s50"])
    row("Celery chain, ignore_result", t["c10"], t["c50"])
    row("Celery chain, results stored", t["r10"], t["r50"])
    row("celery-steps function, in-process (eager)", t["e10"], t["e50"])
    row("floor in the worker: a task doing n bare EVALSHAs", t["f10"], t["f50"])

    print("\n## summary\n")
    print("| figure | value |")
    print("|---|---:|")
    print(f"| floor: EVALSHA `return 1`, median | {f_med * 1e6:.0f} µs |")
    print(f"| floor: EVALSHA `return 1`, p99 | {f_p99 * 1e6:.0f} µs |")
    print(f"| floor: EVALSHA `return 1`, p10 | {pct(floor, 10) * 1e6:.0f} µs |")
    print(
        f"| floor in the worker thread (task doing n EVALSHAs), marginal | "
        f"{us(marginal(t['f10'], t['f50']))} µs |"
    )
    print(
        f"| floor re-measured after the runs, median | "
        f"{statistics.median(floor_after) * 1e6:.0f} µs |"
    )
    print(f"| per-step cost (worker) | {us(step)} µs |")
    print(f"| per-step cost (in-process, no broker) | {us(marginal(t['e10'], t['e50']))} µs |")
    print(f"| per-link cost (chain, ignore_result) | {us(link)} µs |")
    print(f"| per-link cost (chain, results stored) | {us(rlink)} µs |")
    print(f"| ratio step / floor (target <= {STEP_TARGET:g}x) | {step / f_med:.1f}x |")
    print(f"| ratio link / step (target >= {LINK_TARGET:g}x) | {link / step:.1f}x |")
    print(f"| ratio link (results stored) / step | {rlink / step:.1f}x |")
    fw = marginal(t["f10"], t["f50"])
    print(f"| ratio step / floor-in-worker | {step / fw:.1f}x |")
    print(
        f"| ratio step / floor, from p10s (least disturbed) | "
        f"{marginal(t['s10'], t['s50'], 10) / pct(floor, 10):.1f}x |"
    )
    print(f"| Redis commands per step (executed, incl. inside Lua) | {cmd_step:.2f} |")
    print(f"| Redis commands per link (ignore_result) | {cmd_link:.2f} |")
    print(f"| Redis commands per link (results stored) | {cmd_rlink:.2f} |")
    print(f"| client round trips per step | {rt_step:.2f} |")
    print(f"| client round trips per link (ignore_result) | {rt_link:.2f} |")
    print(f"| client round trips per link (results stored) | {rt_rlink:.2f} |")

    def breakdown(label: str, by: dict[str, float]) -> None:
        parts = ", ".join(f"{k} {v:g}" for k, v in sorted(by.items(), key=lambda kv: -kv[1]))
        print(f"- {label}: {parts or 'none'}")

    print(
        "\nRedis commands per extra step/link, by command (INFO commandstats, "
        f"({LONG}-run minus {SHORT}-run) / {LONG - SHORT}; commands a Lua script or a "
        "MULTI block runs are counted one by one):"
    )
    breakdown("step", cmd_step_by)
    breakdown("chain link, ignore_result", cmd_link_by)
    breakdown("chain link, results stored", cmd_rlink_by)

    print("\n## targets (informational)\n")
    ok1 = step <= STEP_TARGET * f_med
    ok2 = link >= LINK_TARGET * step
    print(
        f"{'PASS' if ok1 else 'MISS'}  step/floor = {step / f_med:.1f}x "
        f"(target <= {STEP_TARGET:g}x): step {us(step)} µs vs floor {f_med * 1e6:.0f} µs"
    )
    print(
        f"{'PASS' if ok2 else 'MISS'}  link/step = {link / step:.1f}x "
        f"(target >= {LINK_TARGET:g}x): link {us(link)} µs vs step {us(step)} µs"
    )

    print(
        f"\nload average at start {load_start[0]:.2f}, at end {load_end[0]:.2f} "
        f"(on {os.cpu_count()} cpu: above ~0.5 other processes are competing)"
    )
    if prof is not None:
        print_profile(prof, max(10, runs), args.top)
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
