"""Scale: bytes per sleeping run by the million; events routed and runs started per second.

Run from the repository root::

    .venv/bin/python -m bench.scale            # 1,000,000 sleeping runs; 10,000 events
    .venv/bin/python -m bench.scale --quick    # 20,000 sleeping runs; 2,000 events

It starts its own throwaway ``redis-server`` (free TCP port, no persistence, killed at exit).
Every figure is printed next to a baseline measured in the same invocation; nothing asserts.

(a) **Bytes per sleeping run.** First a real sample: ``bench.timers``' ``sleeper_bytes`` (a
    real worker runs ``--sample`` runs of ``ctx.step.sleep("nap", "7d")``); then, on the
    emptied server and in the same namespace, the same count written synthetically
    (``bench/scale_bytes.py``: the store calls of a real run's life, their Lua script calls
    recorded and replayed in pipelines) and both census tables side by side: they must match.
    Then synthetic runs up to 10k, 100k and ``--runs`` (``--writers`` processes), within
    ``--write-budget`` seconds and the free memory; at each count the ``used_memory`` delta per
    run and the ``MEMORY USAGE`` per run (every 1,000th run's keys, plus its share of the
    timers and indexes). Baseline: ``--runs``/100 messages of a trivial Celery task with a
    small JSON argument waiting in the Redis broker queue.
(b) **Throughput** on 1 and 2 real ``celery -A bench.wake_app worker -P prefork`` nodes
    (default settings): E events ``bench/start``, each starting a run of ``starter`` (one
    ``ctx.step.run`` of a trivial function), sent with ``steps.send`` in batches of 1,000;
    from the first send, when every run exists (the event was routed: the status indexes'
    sizes) and when every run completed. Baseline on the same nodes: E ``bench.plain`` tasks
    (the same trivial function, then one ``INCR`` so the bench can count them done) sent
    with ``apply_async`` in a loop.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from bench.nodes import Nodes, send_all
from bench.scale_bytes import (
    BytesResult,
    Checkpoint,
    celery_messages,
    checkpoint,
    compare_with_real,
    write_parallel,
)
from bench.scale_report import print_bytes, print_throughput
from bench.step_overhead import RedisServer
from bench.wake_app import done_key, make_app
from celery_steps import CelerySteps
from celery_steps.store.redis import RedisStore
from celery_steps.store.redis_keys import STATUSES

GB = 1 << 30


# -- (a) bytes per sleeping run ----------------------------------------------------------------
def _mem_available() -> int:
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _next_target(target: int, written: int, elapsed: float, budget: float,
                 per_run: float) -> tuple[int, str]:
    """How far the next stage may go: ``target``, or less when the write budget (at the rate so
    far) or the free memory (at 1.5x the bytes per run so far, 2 GB kept free) says so."""
    by_time = written + int(written / elapsed * max(0.0, budget - elapsed)) if elapsed else target
    by_memory = written + int((_mem_available() - 2 * GB) / (1.5 * per_run)) if per_run else target
    fits = min(target, by_time, by_memory)
    if fits >= target:
        return target, ""
    fits = fits // 10_000 * 10_000
    return fits, "write budget" if by_time <= by_memory else "free memory"


def bytes_per_run(url: str, runs: int, sample: int, writers: int,
                  budget: float) -> BytesResult:
    """Scenario (a): see the module docstring."""
    pending = celery_messages(url, max(100, runs // 100))
    print(f"  baseline: {pending['count']:,} pending Celery messages, "
          f"{pending['used']:,.0f} B each (used_memory)", flush=True)
    real, synthetic, writer = compare_with_real(url, sample)
    client = writer.client
    store, fn_id = writer.store, writer.fn.id
    print(f"  real sample of {sample} sleepers and its synthetic twin written", flush=True)
    mem0 = client.info("memory")
    stages = [c for c in (10_000, 100_000, 1_000_000) if c < runs] + [runs]
    written, elapsed, odd, kept = 0, 0.0, Counter[str](), []
    points: list[Checkpoint] = []
    stopped_by = ""
    first = sample + 1  # the synthetic twin's runs are 0 .. sample-1
    deadline = time.time() + budget  # a hard stop too: the writers check it every chunk
    for target in stages:
        per_run = points[-1].used if points else 0.0
        target, stopped_by = _next_target(target, written, elapsed, budget, per_run)
        if target <= written:
            break
        part = write_parallel(url, "bench_sleep", first + written, target - written, writers,
                              deadline)
        if part.count < target - written:
            stopped_by = "write budget"
        kept += part.sample
        odd.update(part.odd)
        written, elapsed = written + part.count, elapsed + part.seconds
        points.append(checkpoint(client, store, fn_id, n=written, sample=kept, mem0=mem0,
                                 write_s=elapsed, odd=sum(odd.values())))
        p = points[-1]
        print(f"  {written:,} synthetic sleepers in {elapsed:.0f} s: {p.used:,.0f} B each "
              f"(used_memory), load {p.load:.2f}", flush=True)
        if stopped_by:
            break
    synthetic["odd_replies"] = dict(odd.most_common(5))
    client.close()
    return BytesResult(real, synthetic, points, pending, stopped_by)


# -- (b) throughput ----------------------------------------------------------------------------
def _counts(client: redis.Redis, store: RedisStore) -> dict[str, int]:
    """Runs per status in the namespace (the status indexes: a run is in exactly one)."""
    keys = store.keys
    with client.pipeline(transaction=False) as pipe:
        for shard in range(keys.shards):
            for status in STATUSES:
                pipe.zcard(keys.status_index(shard, status))
        sizes = pipe.execute()
    out: Counter[str] = Counter()
    for i, size in enumerate(sizes):
        out[STATUSES[i % len(STATUSES)]] += int(size)
    return dict(out)


def _wait_counts(client: redis.Redis, store: RedisStore, before: dict[str, int], events: int,
                 t0: float, timeout: float) -> tuple[float, float, dict[str, int]]:
    """Seconds from ``t0`` until ``events`` more runs exist (routed), and until they ended."""
    routed_at = 0.0
    while True:
        now = {k: v - before.get(k, 0) for k, v in _counts(client, store).items()}
        at = time.monotonic() - t0
        if not routed_at and sum(now.values()) >= events:
            routed_at = at
        if now.get("completed", 0) + now.get("failed", 0) >= events:
            return routed_at, at, now
        if at > timeout:
            raise TimeoutError(f"after {timeout:.0f} s, of {events:,} runs: {now}")
        time.sleep(0.02)


def steps_rate(client: redis.Redis, steps: CelerySteps, events: int, first: int,
               timeout: float = 600) -> dict[str, float]:
    """E ``bench/start`` events sent; events routed and runs completed per second."""
    store: RedisStore = steps.runtime.store  # type: ignore[assignment]
    batch = [{"name": "bench/start", "data": {"i": first + i}} for i in range(events)]
    before = _counts(client, store)
    t0 = time.monotonic()
    send_all(steps, batch)
    sent = time.monotonic() - t0
    routed, done, now = _wait_counts(client, store, before, events, t0, timeout)
    return {"sent_s": sent, "routed_s": routed, "done_s": done, "failed": now.get("failed", 0),
            "routed_rate": events / routed, "rate": events / done, "load": os.getloadavg()[0]}


def plain_rate(client: redis.Redis, app: Any, namespace: str, events: int,
               timeout: float = 600) -> dict[str, float]:
    """E ``bench.plain`` tasks sent in a loop; completed per second."""
    task = app.tasks["bench.plain"]
    key = done_key(namespace)
    base = int(client.get(key) or 0)
    t0 = time.monotonic()
    with app.producer_or_acquire() as producer:
        for i in range(events):
            task.apply_async((i,), producer=producer)
    sent = time.monotonic() - t0
    while int(client.get(key) or 0) - base < events:
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{int(client.get(key) or 0) - base:,}/{events:,} plain tasks "
                               f"done after {timeout:.0f} s")
        time.sleep(0.02)
    done = time.monotonic() - t0
    return {"sent_s": sent, "done_s": done, "rate": events / done,
            "load": os.getloadavg()[0]}


def throughput(url: str, nodes: int, events: int, concurrency: int,
               logs: Path) -> dict[str, Any]:
    """Scenario (b) on ``nodes`` fresh nodes: warm-up, baseline, then celery-steps."""
    ns = f"bs{uuid.uuid4().hex[:8]}"
    app, steps = make_app(url, ns, {})
    client = redis.Redis.from_url(url)
    cluster = Nodes(url, ns, {}, logs)
    try:
        cluster.start(nodes, concurrency)
        warm = 20 * nodes * concurrency
        plain_rate(client, app, ns, warm, timeout=120)
        steps_rate(client, steps, warm, -warm, timeout=120)
        plain = plain_rate(client, app, ns, events)
        new = steps_rate(client, steps, events, 0)
        return {"nodes": nodes, "events": events, "plain": plain, "steps": new}
    finally:
        cluster.stop()
        client.close()
        app.close()


# -- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="20,000 sleeping runs, 2,000 events")
    parser.add_argument("--runs", type=int, help="sleeping runs to write (1,000,000)")
    parser.add_argument("--sample", type=int, default=200, help="real sample of sleepers")
    parser.add_argument("--writers", type=int, default=2, help="synthetic writer processes")
    parser.add_argument("--write-budget", type=float, default=600.0,
                        help="seconds the synthetic writes may take in all (600)")
    parser.add_argument("--events", type=int, help="events per throughput scenario (10,000)")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2,
                        help="pool processes per node")
    parser.add_argument("--only", choices=("bytes", "throughput"), help="one part only")
    parser.add_argument("--redis-server", help="redis-server binary (default: from PATH)")
    args = parser.parse_args(argv)
    runs = args.runs or (20_000 if args.quick else 1_000_000)
    events = args.events or (2000 if args.quick else 10_000)

    logging.basicConfig(level=logging.WARNING)
    server = RedisServer(args.redis_server).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logs = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        return _run(server.url, runs, events, args, logs)
    finally:
        server.stop()


def _run(url: str, runs: int, events: int, args: argparse.Namespace, logs: Path) -> int:
    client = redis.Redis.from_url(url)
    info = client.info("server")
    load = os.getloadavg()
    print(f"# celery-steps scale  ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cpu, "
          f"{_mem_available() / GB:.1f} GB available, Python {sys.version.split()[0]}, redis "
          f"{info['redis_version']}, load {load[0]:.2f}; worker logs in {logs})", flush=True)
    client.close()
    if args.only != "throughput":
        result = bytes_per_run(url, runs, args.sample, args.writers, args.write_budget)
        print_bytes(result, args.sample)
    if args.only != "bytes":
        rows = []
        for nodes in (1, 2):
            rows.append(throughput(url, nodes, events, args.concurrency, logs))
            r = rows[-1]
            print(f"  {nodes} node(s): celery-steps {r['steps']['rate']:,.0f} runs/s, plain "
                  f"Celery {r['plain']['rate']:,.0f} tasks/s", flush=True)
        print_throughput(rows, args.concurrency)
    end = os.getloadavg()
    print(f"\nload average at start {load[0]:.2f}, at end {end[0]:.2f} (on {os.cpu_count()} "
          "cpu, shared with other users)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
