"""What starting runs costs the caller: ``steps.send`` of many events, ``fn.invoke`` in a loop.

Two ways to start, measured side by side in one run on one Redis (broker and store):

- **poller** (default, ``steps_publish_from_client=False``): the caller only writes the event
  or run with a due-now timer (``steps.send`` of many events is one pipeline); the workers'
  timer pollers publish the routing and the starts, in batches;
- **client** (the baseline, ``steps_publish_from_client=True``): the caller also publishes one
  Celery message per event or run, as celery-steps did before.

It prints the caller's cost per event or run (medians over ``--rounds`` interleaved rounds),
the ratio client : poller, and what the poller path adds to the latency of one run end to
end (``fn.invoke`` to ``wait_for_run`` returning, with a real in-thread worker). Nothing here
asserts: the targets are for the record (docs/performance.md)::

    .venv/bin/python -m bench.starts            # 1,000 per round, 5 rounds
    .venv/bin/python -m bench.starts --n 200 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable

from celery import Celery
from celery.contrib.testing.worker import start_worker

from bench.step_overhead import RedisServer, pct
from celery_steps import CelerySteps, Context, Function


def make_app(url: str, *, client_publish: bool) -> tuple[Celery, CelerySteps, Function]:
    name = f"bench_starts_{uuid.uuid4().hex[:6]}"
    app = Celery(name, broker=url, backend=url, set_as_current=False)
    app.conf.update(steps_namespace=name, task_default_queue=name,
                    steps_publish_from_client=client_publish, worker_hijack_root_logger=False)
    steps = CelerySteps(app)

    @steps.function(id="noop", trigger="bench/start")
    def noop(ctx: Context) -> int:
        return 1

    return app, steps, noop


def per_item_us(action: Callable[[], None], n: int) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) / n * 1e6


def caller_costs(steps: CelerySteps, fn: Function, n: int) -> dict[str, float]:
    def send_batch() -> None:
        steps.send([{"name": "bench/start", "data": {"i": i}} for i in range(n)])

    def send_each() -> None:
        for i in range(n):
            steps.send("bench/start", {"i": i})

    def invoke_each() -> None:
        for i in range(n):
            fn.invoke({"i": i})

    return {"send, one call": per_item_us(send_batch, n),
            "send, one at a time": per_item_us(send_each, n),
            "invoke, in a loop": per_item_us(invoke_each, n)}


def latency_ms(app: Celery, steps: CelerySteps, fn: Function, samples: int) -> list[float]:
    out = []
    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
        steps.wait_for_run(fn.invoke(), timeout=30)  # warm
        for _ in range(samples):
            started = time.perf_counter()
            steps.wait_for_run(fn.invoke(), timeout=30)
            out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="events or runs per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency-samples", type=int, default=30)
    args = parser.parse_args()

    server = RedisServer().start()
    try:
        apps = {mode: make_app(server.url, client_publish=(mode == "client"))
                for mode in ("poller", "client")}
        costs: dict[str, dict[str, list[float]]] = {m: {} for m in apps}
        for _ in range(args.rounds):  # interleaved, so load changes hit both alike
            for mode, (_, steps, fn) in apps.items():
                for what, us in caller_costs(steps, fn, args.n).items():
                    costs[mode].setdefault(what, []).append(us)
        print(f"## Caller cost per event or run (median of {args.rounds} rounds of {args.n})\n")
        print("| what | poller (default) µs | client (baseline) µs | client : poller |")
        print("|---|---:|---:|---:|")
        for what in costs["poller"]:
            a = statistics.median(costs["poller"][what])
            b = statistics.median(costs["client"][what])
            print(f"| {what} | {a:,.0f} | {b:,.0f} | {b / a:.1f}x |")
        print(f"\n## One run end to end (invoke to wait_for_run), {args.latency_samples} "
              "samples, ms\n")
        print("| path | p50 | p90 | p99 |")
        print("|---|---:|---:|---:|")
        for mode in apps:  # fresh apps: the backlog of the cost rounds stays unprocessed
            app, steps, fn = make_app(server.url, client_publish=(mode == "client"))
            lat = latency_ms(app, steps, fn, args.latency_samples)
            print(f"| {mode} | {pct(lat, 50):.1f} | {pct(lat, 90):.1f} | {pct(lat, 99):.1f} |")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
