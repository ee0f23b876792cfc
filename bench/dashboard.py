"""The dashboard with many runs: page times at 100,000 runs against 100, and what each loads.

Run from the repository root::

    .venv/bin/python -m bench.dashboard              # 100,000 runs (~1 minute to fill)
    .venv/bin/python -m bench.dashboard --runs 20000 # any N

It starts its own throwaway ``redis-server`` (free TCP port, ``--save '' --appendonly no``,
killed at exit) and, in one process:

1. creates N runs of one function (``bench-runs``) through the store's ``create_run`` (one
   ``EVALSHA`` each, as routing does), 1 ms apart, then gives each three step states and ends
   it through one pipeline per 1,000 runs: 99% ``completed``, every 100th ``failed``;
2. does the same with 100 runs of a second function in its own namespace, the baseline;
3. times, through Starlette's TestClient (in-process ASGI, no sockets), ``GET /runs`` of the
   function (first page, 50 runs), a deep page (the cursor ``before`` = the run 90% down the
   index), ``GET /api/runs`` (first and deep), the home page, and the first page of the
   ``failed`` runs and of a status no run has; each 20 times (``--samples``) after 3 warm-up
   requests, alternating with the same request on the 100-run store; median and p90 in ms;
4. counts the runs each request loads from the store (``load_run`` calls) and the Redis
   commands Redis ran (``INFO commandstats`` diff): paging never loads all runs.

The baseline for the ratio is the same request on the 100-run store (its deep cursor is the
50th newest run, so a full page remains).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery
from starlette.testclient import TestClient

from bench.step_overhead import RedisServer, pct
from celery_steps import CelerySteps, Context
from celery_steps.dashboard import create_app
from celery_steps.dashboard.queries import SCAN_LIMIT
from celery_steps.store.base import NewRun
from celery_steps.store.redis import RedisStore

SAMPLES, WARMUP = 20, 3
START_MS = 1_790_000_000_000
STEPS = {
    "fetch": {"op": "run", "pos": 0, "status": "completed", "attempts": 1, "result": {"n": 1}},
    "transform": {"op": "run", "pos": 1, "status": "completed", "attempts": 1, "result": [1]},
    "store": {"op": "run", "pos": 2, "status": "completed", "attempts": 1, "result": None},
}


def make_steps(url: str, namespace: str, function_id: str) -> CelerySteps:
    app = Celery(f"bench_{namespace}", broker="memory://", set_as_current=False)
    app.conf.update(task_always_eager=True, steps_timer_poller=False, steps_store_url=url,
                    steps_namespace=namespace)
    steps = CelerySteps(app)

    @steps.function(id=function_id, trigger=f"bench/{function_id}")
    def handler(ctx: Context) -> None:  # never executed: the runs are written directly
        return None

    return steps


def fill(steps: CelerySteps, function_id: str, count: int) -> list[str]:
    """Create ``count`` ended runs with three steps each; their ids, oldest first."""
    store = steps.runtime.store
    assert isinstance(store, RedisStore)
    ids = [f"run_bench{n:08d}" for n in range(count)]
    began = time.perf_counter()
    for n, run_id in enumerate(ids):
        event = {"id": f"evt_bench{n:08d}", "name": f"bench/{function_id}", "data": {"n": n},
                 "ts": START_MS + n}
        store.create_run(NewRun(id=run_id, function_id=function_id, event_ids=[event["id"]],
                                created_at=START_MS + n, events=[event]))
    for first in range(0, count, 1000):
        with store.r.pipeline(transaction=False) as pipe:
            for n in range(first, min(first + 1000, count)):
                rk = store.keys.run_keys(ids[n])
                meta, steps_key = rk.meta, rk.steps
                failed = n % 100 == 99
                entry = f"{ids[n]}|{function_id}"  # moved between the status indexes
                pipe.zrem(store.keys.status_index(store.keys.shard_of(ids[n]), "queued"), entry)
                pipe.zadd(store.keys.status_index(store.keys.shard_of(ids[n]),
                                                  "failed" if failed else "completed"),
                          {entry: START_MS + n})
                pipe.hset(meta, mapping={
                    "status": "failed" if failed else "completed",
                    "ended_at": START_MS + n + 40,
                    **({"error": json.dumps({"name": "ValueError", "message": "bad row"})}
                       if failed else {"output": json.dumps({"rows": n})}),
                })
                pipe.hset(steps_key, mapping={
                    k: json.dumps({**v, "started_at": START_MS + n + 10 * i,
                                   "ended_at": START_MS + n + 10 * i + 9})
                    for i, (k, v) in enumerate(STEPS.items())})
            pipe.execute()
    print(f"  created {count:,} runs of {function_id} in {time.perf_counter() - began:.1f} s",
          flush=True)
    return ids


class Loads:
    """Counts runs loaded from the store (``load_run`` calls) while installed."""

    def __init__(self, store: RedisStore) -> None:
        self.count = 0
        original = store.load_run

        def counting(run_id: str) -> Any:
            self.count += 1
            return original(run_id)

        store.load_run = counting  # type: ignore[method-assign]


def commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


def profile(client: TestClient, path: str, loads: Loads, r: redis.Redis) -> dict[str, float]:
    """Warm up, then count the runs one request loads and the Redis commands it runs."""
    for _ in range(WARMUP):
        assert client.get(path).status_code == 200, path
    before_loads, before_cmds = loads.count, commands(r)
    assert client.get(path).status_code == 200
    return {"loads": loads.count - before_loads,
            "commands": commands(r) - before_cmds - 1}  # minus the INFO itself


def timed(client: TestClient, path: str) -> float:
    began = time.perf_counter()
    response = client.get(path)
    elapsed = (time.perf_counter() - began) * 1000
    assert response.status_code == 200, path
    return elapsed


def measure(pair: list[tuple[TestClient, str, Loads]], r: redis.Redis,
            samples: int) -> list[dict[str, float]]:
    """Both stores' request, interleaved sample by sample so load on the machine hits both
    alike; p50 and p90 in ms, plus what one request loads."""
    results = [profile(client, path, loads, r) for client, path, loads in pair]
    times: list[list[float]] = [[] for _ in pair]
    for _ in range(samples):
        for i, (client, path, _loads) in enumerate(pair):
            times[i].append(timed(client, path))
    for result, series in zip(results, times, strict=True):
        result.update(p50=statistics.median(series), p90=pct(series, 90))
    return results


def report(rows: list[tuple[str, dict[str, float], dict[str, float] | None]]) -> None:
    print(f"\n{'request':44} {'p50 ms':>8} {'p90 ms':>8} {'runs loaded':>11} "
          f"{'redis cmds':>10} {'p50 vs 100 runs':>15}")
    for name, big, small in rows:
        ratio = f"{big['p50'] / small['p50']:.2f}x" if small else "-"
        print(f"{name:44} {big['p50']:8.2f} {big['p90']:8.2f} {big['loads']:11.0f} "
              f"{big['commands']:10.0f} {ratio:>15}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=SAMPLES)
    args = parser.parse_args(argv)
    server = RedisServer().start()
    r = redis.Redis.from_url(server.url)
    print(f"redis-server on {server.url}; filling the stores", flush=True)
    big_steps = make_steps(server.url, "bench_big", "bench-runs")
    small_steps = make_steps(server.url, "bench_small", "bench-runs")
    big_ids = fill(big_steps, "bench-runs", args.runs)
    small_ids = fill(small_steps, "bench-runs", 100)
    # deep: a cursor 90% down the newest-first index; on 100 runs, halfway (a full page left)
    deep_big = big_ids[len(big_ids) // 10]
    deep_small = small_ids[50]
    paths: list[tuple[str, Callable[[str], str]]] = [
        ("GET /runs?function= (first page of 50)", lambda _d: "/runs?function=bench-runs"),
        ("GET /runs?function=&before= (90% deep)",
         lambda d: f"/runs?function=bench-runs&before={d}"),
        ("GET /api/runs?function= (first page)", lambda _d: "/api/runs?function=bench-runs"),
        ("GET /api/runs?function=&before= (90% deep)",
         lambda d: f"/api/runs?function=bench-runs&before={d}"),
        ("GET / (home: newest 50 per function)", lambda _d: "/"),
        ("GET /api/runs?status=failed (1% of runs)",
         lambda _d: "/api/runs?function=bench-runs&status=failed"),
        ("GET /api/runs?status=running (no match)",
         lambda _d: "/api/runs?function=bench-runs&status=running"),
    ]
    rows = []
    with TestClient(create_app(big_steps)) as big, TestClient(create_app(small_steps)) as small:
        big_store, small_store = big_steps.runtime.store, small_steps.runtime.store
        assert isinstance(big_store, RedisStore) and isinstance(small_store, RedisStore)
        big_loads, small_loads = Loads(big_store), Loads(small_store)
        for name, path in paths:
            at_big, at_small = measure([(big, path(deep_big), big_loads),
                                        (small, path(deep_small), small_loads)], r, args.samples)
            rows.append((name, at_big, at_small))
    print(f"\n{args.runs:,} runs against 100 runs of one function (in-process ASGI, "
          f"{args.samples} samples each, interleaved):")
    report(rows)
    most = max(row[1]["loads"] for row in rows)
    print(f"\nmost runs any request loaded: {most:.0f} of {args.runs:,} (a status filter reads "
          f"at most {SCAN_LIMIT:,} runs per page; the others limit + 2)")
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
