"""Timers: wake-up lateness of the timer poller, and the Redis bytes a sleeping run holds.

Run from the repository root::

    .venv/bin/python -m bench.timers            # full: 10,000 timers, 1,000 sleepers
    .venv/bin/python -m bench.timers --quick    # 2,000 timers, 200 sleepers

It starts its own throwaway ``redis-server`` (free TCP port, ``--save '' --appendonly no``,
killed at exit) and measures:

(a) wake-up lateness: N timer members due within the next ~3 s are put straight into the
    ``<ns>:timers`` sorted set (setup, not timed); then one or two real ``TimerPoller``
    threads (each with its own ``RedisStore``, as two workers would have) claim them. The
    poller's ``dispatch_claimed`` is replaced by a recorder of ``now - due`` per member (so
    this is the poller's own lateness), and, in a third scenario, by the recorder followed by
    the real ``dispatch_claimed`` of a real ``CelerySteps`` (Celery publishes, up to
    ``steps_wake_batch`` runs per message; no worker pool to hand them to). p50/p99/max, and
    how many members fired more or less than once.
    The real-dispatch scenario is repeated with a fifth of the timers, below what one
    process can publish. A sparse scenario spreads 60 timers 50-400 ms apart, so the poller
    really blocks in ``BLPOP`` between them: the precision of the blocking wait itself. Two
    diagnosis rows repeat scenarios with Redis ``hz`` 100 instead of 10.
(b) bytes per sleeping run: a real Celery app and in-thread worker (threads pool,
    concurrency 4), a function whose handler does one ``ctx.step.sleep("nap", "7d")``;
    M runs are started with ``steps.send``; once all are ``sleeping``, the ``used_memory``
    delta per run and the exact footprint (``MEMORY USAGE`` of every key, grouped by kind).

Targets (informational; the script never fails on a miss): p99 lateness <= 50 ms;
<= 1 KB per sleeping run beyond its stored step results.
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
from collections import Counter, defaultdict
from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any

import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker

import celery_steps.runtime.timers as poller_mod
from bench.step_overhead import RedisServer, pct
from celery_steps import CelerySteps, Context
from celery_steps.clock import Clock
from celery_steps.runtime.runs import run_id_for
from celery_steps.settings import Settings
from celery_steps.store.redis import RedisStore
from celery_steps.store.redis_keys import KeyLayout

LATENESS_TARGET_MS = 50.0
BYTES_TARGET = 1024


# -- (a) wake-up lateness ----------------------------------------------------------------------
class Recorder:
    """Stands in for ``poller.dispatch_claimed``: records when each member was claimed and
    dispatched, by whom."""

    def __init__(self, then: Any = None) -> None:
        self.lock = threading.Lock()
        self.fired: list[tuple[str, float, str]] = []
        self.then = then  # the real dispatch to call afterwards, or None

    def __call__(self, life: Any, claimed: list[tuple[str, int]], *args: Any) -> Any:
        now = time.time() * 1000.0
        who = threading.current_thread().name
        with self.lock:
            self.fired.extend((member, now, who) for member, _ in claimed)
        return self.then(life, claimed, *args) if self.then is not None else []


def _stand_in(url: str, namespace: str) -> SimpleNamespace:
    """What ``TimerPoller``/``poll_once`` use of the runtime: store, clock, settings and a
    transport whose batches publish nothing (the recorder stands in for dispatch)."""
    return SimpleNamespace(
        store=RedisStore.from_url(url, namespace=namespace),
        clock=Clock(),
        settings=Settings(namespace=namespace),
        transport=SimpleNamespace(batch=lambda: nullcontext(None)),
    )


def _schedule(client: redis.Redis, keys: KeyLayout, due_by_member: dict[str, int]) -> None:
    """Put the timers in their shards' sorted sets and wake the pollers, as the store does."""
    by_shard: dict[int, dict[str, int]] = {}
    for member, due in due_by_member.items():
        by_shard.setdefault(keys.member_shard(member), {})[member] = due
    for shard, items in by_shard.items():
        pairs = list(items.items())
        for start in range(0, len(pairs), 2000):
            client.zadd(keys.timers(shard), dict(pairs[start : start + 2000]))
    client.publish(keys.signal, "1")


def lateness_scenario(
    url: str,
    label: str,
    *,
    n: int,
    pollers: int,
    spread_ms: tuple[int, int],
    real_steps: CelerySteps | None = None,
    sparse: bool = False,
) -> dict[str, Any]:
    namespace = (
        real_steps.settings.namespace if real_steps else f"bench_t{random.randrange(1 << 30)}"
    )
    if real_steps is not None:
        fakes: list[Any] = [real_steps.runtime] * pollers  # one runtime, as in one worker
        recorder = Recorder(then=poller_mod.dispatch_claimed)
    else:
        fakes = [_stand_in(url, namespace) for _ in range(pollers)]
        recorder = Recorder()
    client = redis.Redis.from_url(url)
    keys = KeyLayout(namespace, 1)  # one server: one shard
    client.delete(*(keys.timers(k) for k in range(keys.shards)))

    now = int(time.time() * 1000)
    due: dict[str, int] = {}
    if sparse:
        t = now + 300
        for i in range(n):
            t += random.randint(*spread_ms)
            due[f"r|bench-timer|run{i}"] = t
    else:
        lo, hi = spread_ms
        for i in range(n):
            due[f"r|bench-timer|run{i}"] = now + random.randint(lo, hi)
    _schedule(client, keys, due)
    setup_ms = time.time() * 1000 - now

    original = poller_mod.dispatch_claimed
    poller_mod.dispatch_claimed = recorder  # type: ignore[assignment]
    threads = []
    try:
        for index, fake in enumerate(fakes):
            p = poller_mod.TimerPoller(fake)
            p.start()
            assert p._thread is not None
            p._thread.name = f"poller-{index}"
            threads.append(p)
        deadline = time.time() + (max(due.values()) - time.time() * 1000) / 1000 + 15
        while time.time() < deadline:
            with recorder.lock:
                seen = len({m for m, _, _ in recorder.fired})
            if seen >= n:
                break
            time.sleep(0.05)
        time.sleep(0.5)  # let a duplicate, if any, show up
    finally:
        for p in threads:
            p.stop()
        poller_mod.dispatch_claimed = original  # type: ignore[assignment]

    counts = Counter(m for m, _, _ in recorder.fired)
    first: dict[str, float] = {}
    for member, at, _ in recorder.fired:
        first.setdefault(member, at)
    late = [first[m] - due[m] for m in due if m in first]
    span_s = (max(first.values()) - min(first.values())) / 1000 if len(first) > 1 else 0.0
    due_span_s = (max(due.values()) - min(due.values())) / 1000
    by_poller = Counter(who for _, _, who in recorder.fired)
    left = sum(client.zcard(keys.timers(k)) for k in range(keys.shards))
    client.close()
    return {
        "label": label,
        "n": n,
        "pollers": pollers,
        "setup_ms": setup_ms,
        "fired": len(first),
        "missing": n - len(first),
        "duplicates": sum(c - 1 for c in counts.values() if c > 1),
        "left_in_zset": left,
        "by_poller": dict(sorted(by_poller.items())),
        "p50": pct(late, 50) if late else float("nan"),
        "p99": pct(late, 99) if late else float("nan"),
        "max": max(late) if late else float("nan"),
        "min": min(late) if late else float("nan"),
        "rate_due": n / due_span_s if due_span_s else 0.0,
        "rate_fired": len(first) / span_s if span_s else 0.0,
    }


def real_steps_app(url: str, namespace: str) -> tuple[Celery, CelerySteps]:
    app = Celery("bench_timers", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        steps_store_url=url,
        steps_namespace=namespace,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_prefetch_multiplier=4,
    )
    return app, CelerySteps(app)


# -- (b) bytes per sleeping run ----------------------------------------------------------------
def _kind_of(key: str, ns: str) -> str:
    if not key.startswith(ns + ":"):
        return "other (Celery/kombu)"
    rest = key[len(ns) + 1 :]
    if rest.startswith("{s"):  # a shard's key: <ns>:{s<k>}:<rest>
        rest = rest[rest.index("}") + 2 :]
    if rest.startswith("run:"):
        tail = rest[len("run:") :].partition(":")[2]
        return {"": "run meta hash", "steps": "run steps hash"}.get(tail, f"run {tail}")
    if rest.startswith("evt:"):
        return "event runs (evt:<id>:runs)" if rest.endswith(":runs") else "event (evt:<id>)"
    if rest.startswith("runs:fn:"):
        return "runs:fn:<id>"
    if rest.startswith("runs:st:"):
        return "runs:st:<status>"
    return rest  # timers, runs:fns, ...


def memory_census(client: redis.Redis, ns: str) -> dict[str, list[int]]:
    """``MEMORY USAGE`` (SAMPLES 0: exact) of every key, grouped by kind."""
    by_kind: dict[str, list[int]] = defaultdict(list)
    keys = [k.decode() for k in client.scan_iter(count=1000)]
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        with client.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.memory_usage(key, samples=0)
            sizes = pipe.execute()
        for key, size in zip(chunk, sizes, strict=True):
            if size is not None:
                by_kind[_kind_of(key, ns)].append(int(size))
    return by_kind


def wait_all(client: redis.Redis, run_keys: list[str], status: bytes, timeout: float) -> float:
    t0 = time.monotonic()
    while True:
        with client.pipeline(transaction=False) as pipe:
            for key in run_keys:
                pipe.hget(key, "status")
            statuses = pipe.execute()
        done = sum(1 for s in statuses if s == status)
        if done == len(run_keys):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(
                f"{done}/{len(run_keys)} runs {status.decode()} after {timeout}s: "
                f"{Counter(statuses).most_common(4)}"
            )
        time.sleep(0.2)


def sleeper_bytes(url: str, runs: int) -> dict[str, Any]:
    ns = "bench_sleep"
    app, steps = real_steps_app(url, ns)
    app.conf.steps_timer_poller = True

    @steps.function(id="sleeper", trigger="bench/sleep", retries=0)
    def sleeper(ctx: Context) -> dict[str, Any]:
        ctx.step.sleep("nap", "7d")
        return {"woke": True}

    client = redis.Redis.from_url(url)
    out: dict[str, Any] = {"runs": runs}
    with start_worker(
        app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ):
        # warm-up: 20 sleepers (imports, scripts, connections, kombu keys), then the baseline
        warm = steps.send([{"name": "bench/sleep", "data": {"i": -i}} for i in range(1, 21)])
        store = steps.runtime.store
        wait_all(client, [store.run_key(run_id_for("sleeper", e)) for e in warm], b"sleeping", 60)
        time.sleep(1.0)
        census0 = memory_census(client, ns)
        mem0 = client.info("memory")
        t0 = time.monotonic()
        event_ids: list[str] = []
        for start in range(0, runs, 1000):
            batch = [
                {"name": "bench/sleep", "data": {"i": i}}
                for i in range(start, min(runs, start + 1000))
            ]
            event_ids.extend(steps.send(batch))
        run_keys = [steps.runtime.store.run_key(run_id_for("sleeper", e)) for e in event_ids]
        wait_all(client, run_keys, b"sleeping", 600)
        out["start_s"] = time.monotonic() - t0
        # let the worker ack the last messages (acks_late) and kombu settle
        for _ in range(50):
            if client.llen("celery") == 0 and client.zcard("unacked_index") == 0:
                break
            time.sleep(0.1)
        time.sleep(0.5)
        mem1 = client.info("memory")
        census1 = memory_census(client, ns)
        # one sample run, field by field
        sample = run_keys[len(run_keys) // 2]
        out["sample_meta"] = {k.decode(): len(v) for k, v in client.hgetall(sample).items()}
        out["sample_steps"] = {
            k.decode(): len(v) for k, v in client.hgetall(sample + ":steps").items()
        }
        out["sample_meta_usage"] = client.memory_usage(sample, samples=0)
        out["sample_steps_usage"] = client.memory_usage(sample + ":steps", samples=0)
        out["encodings"] = {
            name: client.object("encoding", key).decode()
            for name, key in (
                ("meta", sample),
                ("steps", sample + ":steps"),
                ("timers", store.keys.timers(0)),
            )
        }
        out["listpack_value_max"] = int(
            client.config_get("hash-max-listpack-value")["hash-max-listpack-value"]
        )
        # what-if: the same two hashes re-created (DUMP/RESTORE) with a larger listpack limit
        client.config_set("hash-max-listpack-value", 512)
        for name, key in (("meta", sample), ("steps", sample + ":steps")):
            copy = f"bench:whatif:{name}"
            client.restore(copy, 0, client.dump(key), replace=True)
            out[f"whatif_{name}"] = (
                client.memory_usage(copy, samples=0),
                client.object("encoding", copy).decode(),
            )
            client.delete(copy)
        client.config_set("hash-max-listpack-value", out["listpack_value_max"])
        out["ttl_event_s"] = client.pttl(store.keys.event(event_ids[0])) / 1000
        out["ttl_run_s"] = client.pttl(sample) / 1000
    out["used_memory_delta"] = mem1["used_memory"] - mem0["used_memory"]
    out["used_memory_dataset_delta"] = mem1.get("used_memory_dataset", 0) - mem0.get(
        "used_memory_dataset", 0
    )
    out["census0"] = {k: (len(v), sum(v)) for k, v in census0.items()}
    out["census1"] = {k: (len(v), sum(v)) for k, v in census1.items()}
    out["timers_card"] = client.zcard(store.keys.timers(0))
    client.close()
    return out


# -- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.timers", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="2,000 timers, 200 sleepers")
    parser.add_argument("--timers", type=int, help="timers per lateness scenario (10,000)")
    parser.add_argument("--sleepers", type=int, help="sleeping runs (1,000)")
    parser.add_argument("--redis-server", help="redis-server binary (default: from PATH)")
    args = parser.parse_args(argv)
    n = args.timers or (2000 if args.quick else 10_000)
    m = args.sleepers or (200 if args.quick else 1000)

    logging.basicConfig(level=logging.WARNING)
    server = RedisServer(args.redis_server).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return _run(server.url, n, m)
    finally:
        server.stop()


def _row(r: dict[str, Any]) -> str:
    return (
        f"| {r['label']} | {r['n']:,} | {r['pollers']} | {r['p50']:.1f} | {r['p99']:.1f} | "
        f"{r['max']:.1f} | {r['fired']:,} | {r['duplicates']} | {r['missing']} | "
        f"{r['left_in_zset']} | {', '.join(f'{v:,}' for v in r['by_poller'].values())} | "
        f"{r['rate_due']:,.0f} | {r['rate_fired']:,.0f} |"
    )


def _run(url: str, n: int, m: int) -> int:
    load_start = os.getloadavg()
    client = redis.Redis.from_url(url)
    info = client.info("server")
    hz = client.config_get("hz").get("hz")
    print(
        f"# celery-steps timers  ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cpu, "
        f"Python {sys.version.split()[0]}, redis {info['redis_version']} hz={hz} on {url}, "
        f"timers={n:,}, sleepers={m:,}, load {load_start[0]:.2f})"
    )

    # (a) -----------------------------------------------------------------------------------
    print(
        "\n## wake-up lateness (ms after the due time; the recorder runs in the poller "
        "thread when the member is dispatched)\n"
    )
    results = []
    spread = (300, 3000)  # due 0.3-3 s from now
    results.append(
        lateness_scenario(url, "1 poller, recording dispatch", n=n, pollers=1, spread_ms=spread)
    )
    results.append(
        lateness_scenario(
            url, "2 racing pollers, recording dispatch", n=n, pollers=2, spread_ms=spread
        )
    )
    app, real = real_steps_app(url, "bench_pub")
    results.append(
        lateness_scenario(
            url,
            "2 pollers, real dispatch (Celery publish)",
            n=n,
            pollers=2,
            spread_ms=spread,
            real_steps=real,
        )
    )
    results.append(
        lateness_scenario(
            url,
            "2 pollers, real dispatch, 1/5 of the timers",
            n=n // 5,
            pollers=2,
            spread_ms=spread,
            real_steps=real,
        )
    )
    queued = client.llen("celery")
    client.delete("celery")
    results.append(
        lateness_scenario(
            url,
            "1 poller, sparse: 60 timers 50-400 ms apart",
            n=60,
            pollers=1,
            spread_ms=(50, 400),
            sparse=True,
        )
    )
    # diagnosis: the blocking wait is BLPOP, whose timeout Redis only checks every 1000/hz ms
    client.config_set("hz", 100)
    results.append(
        lateness_scenario(
            url, "diagnosis: 1 poller, recording, Redis hz=100", n=n, pollers=1, spread_ms=spread
        )
    )
    results.append(
        lateness_scenario(
            url,
            "diagnosis: sparse, Redis hz=100",
            n=60,
            pollers=1,
            spread_ms=(50, 400),
            sparse=True,
        )
    )
    client.config_set("hz", int(hz))
    blpop = []
    for timeout in (0.001, 0.02, 0.25):
        took = []
        for _ in range(10):
            t0 = time.perf_counter()
            client.blpop(["bench:nothing"], timeout=timeout)
            took.append((time.perf_counter() - t0) * 1000)
        blpop.append((timeout * 1000, statistics.median(took), max(took)))
    print(
        "| scenario | timers | pollers | p50 | p99 | max | fired | duplicates | missing | "
        "left in zset | per poller | due /s | fired /s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for r in results:
        print(_row(r))
    print(
        f"\n(the real-dispatch scenarios published {queued:,} Celery messages in all; "
        "min lateness per scenario: " + ", ".join(f"{r['min']:.1f}" for r in results) + " ms)"
    )
    print(
        f"BLPOP on an empty list at hz={hz}, asked timeout -> median / max time taken (ms): "
        + "; ".join(f"{a:g} -> {b:.1f} / {c:.1f}" for a, b, c in blpop)
    )

    # (b) -----------------------------------------------------------------------------------
    print(f"\n## bytes per sleeping run ({m:,} runs of `ctx.step.sleep('nap', '7d')`)\n")
    b = sleeper_bytes(url, m)
    c0, c1 = b["census0"], b["census1"]
    kinds = sorted(set(c0) | set(c1))
    print(f"started and all sleeping in {b['start_s']:.1f} s\n")
    print("| key kind | keys before | keys after | bytes after - before (MEMORY USAGE) | per run |")
    print("|---|---:|---:|---:|---:|")
    per_run: dict[str, float] = {}
    for kind in kinds:
        k0, s0 = c0.get(kind, (0, 0))
        k1, s1 = c1.get(kind, (0, 0))
        per_run[kind] = (s1 - s0) / m
        print(f"| {kind} | {k0:,} | {k1:,} | {s1 - s0:,} | {per_run[kind]:.0f} |")
    event_kinds = [k for k in per_run if k.startswith("event")]
    events = sum(per_run[k] for k in event_kinds)
    other = per_run.get("other (Celery/kombu)", 0.0)
    durable = sum(
        v for k, v in per_run.items() if k not in event_kinds and k != "other (Celery/kombu)"
    )
    step_values = sum(b["sample_steps"].values())
    delta = b["used_memory_delta"] / m
    print()
    print("| figure | bytes |")
    print("|---|---:|")
    print(f"| `used_memory` delta / run (INFO memory, everything) | {delta:,.0f} |")
    print(f"| `used_memory_dataset` delta / run | {b['used_memory_dataset_delta'] / m:,.0f} |")
    print(f"| MEMORY USAGE per run, run keys + index and timer shares | {durable:,.0f} |")
    print(f"| of which the stored step state (the `nap` JSON value) | {step_values:,} |")
    print(
        f"| MEMORY USAGE per run, event keys (expire in {b['ttl_event_s'] / 3600:.0f} h) "
        f"| {events:,.0f} |"
    )
    print(f"| MEMORY USAGE per run, Celery/kombu keys | {other:,.0f} |")
    print(f"| `used_memory` delta / run minus event keys | {delta - events:,.0f} |")
    print(
        f"\nsample run meta hash ({b['sample_meta_usage']} B): field -> value bytes "
        + ", ".join(f"{k} {v}" for k, v in b["sample_meta"].items())
    )
    print(
        f"sample run steps hash ({b['sample_steps_usage']} B): "
        + ", ".join(f"{k} {v}" for k, v in b["sample_steps"].items())
    )
    enc = b["encodings"]
    print(
        f"encodings: meta {enc['meta']}, steps {enc['steps']}, timers {enc['timers']} "
        f"(hash-max-listpack-value = {b['listpack_value_max']}); the same hashes restored "
        f"with hash-max-listpack-value 512: meta {b['whatif_meta'][0]} B "
        f"({b['whatif_meta'][1]}), steps {b['whatif_steps'][0]} B ({b['whatif_steps'][1]})"
    )
    print(
        f"timers zset members after: {b['timers_card']:,}; run hash TTL: "
        f"{'none (live run)' if b['ttl_run_s'] < 0 else b['ttl_run_s']}"
    )

    # targets -----------------------------------------------------------------------------------
    print("\n## targets (informational)\n")
    for r in results:
        ok = r["p99"] <= LATENESS_TARGET_MS and r["duplicates"] == 0 and r["missing"] == 0
        print(
            f"{'PASS' if ok else 'MISS'}  {r['label']}: p99 {r['p99']:.1f} ms "
            f"(target <= {LATENESS_TARGET_MS:g}), duplicates {r['duplicates']}, "
            f"missing {r['missing']}"
        )
    beyond = durable - step_values
    print(
        f"{'PASS' if beyond <= BYTES_TARGET else 'MISS'}  sleeping run: {beyond:,.0f} B "
        f"beyond its stored step state (MEMORY USAGE; target <= {BYTES_TARGET}); "
        f"used_memory says {delta - events - step_values:,.0f} B without events"
    )
    load_end = os.getloadavg()
    print(
        f"\nload average at start {load_start[0]:.2f}, at end {load_end[0]:.2f} "
        f"(on {os.cpu_count()} cpu)"
    )
    client.close()
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
