"""The dashboard with many runs: page times at 100,000 runs against 100, and what each loads.

Run from the repository root::

    .venv/bin/python -m bench.dashboard              # 100,000 runs (~1 minute to fill)
    .venv/bin/python -m bench.dashboard --quick      # 20,000 runs, 10 samples
    .venv/bin/python -m bench.dashboard --runs 50000 # any N

It starts its own throwaway ``redis-server`` (free TCP port, ``--save '' --appendonly no``,
killed at exit) and, in one process:

1. creates N runs of one function (``bench-runs``) through the store's ``create_run`` (one
   ``EVALSHA`` each, as routing does), 1 ms apart, then gives each three step states and ends
   it through one pipeline per 1,000 runs: 99% ``completed``, every 100th ``failed``, each
   moved from the ``queued`` status index to its end status's (as the end script does), and
   checks the status indexes hold what the runs say;
2. does the same with 100 runs of a second function in its own namespace, the baseline;
3. times, through Starlette's TestClient (in-process ASGI, no sockets), ``GET /runs`` of the
   function (first page, 50 runs), a deep page (the cursor ``before`` = the run 90% down the
   index), ``GET /api/runs`` (first and deep), the home page, the pages filtered by status
   (``failed``: first page, HTML and API, and a page 90% down the failed runs; a status no run
   has) and the bulk confirmation page of the failed runs (it selects up to 1,000); each 20
   times (``--samples``) after 3 warm-up requests, alternating with the same request on the
   100-run store; median and p90 in ms;
4. counts the runs each request loads from the store (runs read by ``list_runs``, plus
   ``load_run`` calls) and the Redis commands Redis ran (``INFO commandstats`` diff): paging
   never loads all runs, and a status filter loads only runs in that status.

The baseline for the ratio is the same request on the 100-run store (its deep cursor is the
50th newest run, so a full page remains; it has one failed run, so its status pages hold one
run or none).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from celery import Celery
from starlette.testclient import TestClient

from bench.step_overhead import RedisServer, pct
from celery_steps import CelerySteps, Context
from celery_steps.dashboard import create_app
from celery_steps.store.base import NewRun
from celery_steps.store.redis import RedisStore
from celery_steps.store.redis_keys import STATUSES

SAMPLES, WARMUP = 20, 3
QUICK_RUNS, QUICK_SAMPLES = 20_000, 10
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
        event_id = f"evt_bench{n:08d}"
        event = {"id": event_id, "name": f"bench/{function_id}", "data": {"n": n},
                 "ts": START_MS + n}
        store.create_run(NewRun(id=run_id, function_id=function_id, event_ids=[event_id],
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
    check_status_indexes(store, {"failed": count // 100, "completed": count - count // 100})
    return ids


def check_status_indexes(store: RedisStore, expected: dict[str, int]) -> None:
    """The status indexes hold each run once, under the status it ended in."""
    keys = store.keys
    for status in STATUSES:
        held = sum(int(store.r.zcard(keys.status_index(shard, status)))
                   for shard in range(keys.shards))
        assert held == expected.get(status, 0), (status, held, expected)


class Loads:
    """Counts runs loaded from the store while installed: the runs ``list_runs`` reads (its
    pipelined ``_load_many``) and ``load_run`` calls (a cursor, one run)."""

    def __init__(self, store: RedisStore) -> None:
        self.count = 0
        load_run, load_many = store.load_run, store._load_many

        def counting(run_id: str) -> Any:
            self.count += 1
            return load_run(run_id)

        def counting_many(run_ids: list[str]) -> Any:
            self.count += len(run_ids)
            return load_many(run_ids)

        store.load_run = counting  # type: ignore[method-assign]
        store._load_many = counting_many  # type: ignore[method-assign]


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


def report(rows: Sequence[tuple[str, dict[str, float], dict[str, float] | None]]) -> None:
    print(f"\n{'request':48} {'p50 ms':>8} {'p90 ms':>8} {'runs loaded':>11} "
          f"{'redis cmds':>10} {'p50 vs 100 runs':>15}")
    for name, big, small in rows:
        ratio = f"{big['p50'] / small['p50']:.2f}x" if small else "-"
        print(f"{name:48} {big['p50']:8.2f} {big['p90']:8.2f} {big['loads']:11.0f} "
              f"{big['commands']:10.0f} {ratio:>15}")


Cursors = dict[str, str]
"""The cursors one store's requests use: ``deep`` (90% down its runs), ``failed`` (90% down
its failed runs)."""


def cursors(ids: list[str]) -> Cursors:
    """A deep cursor 90% down the newest-first index (halfway on 100 runs, so a full page
    remains), and one 90% down the failed runs (every 100th)."""
    failed = ids[99::100]
    return {"deep": ids[len(ids) // 10] if len(ids) > 100 else ids[len(ids) // 2],
            "failed": failed[len(failed) // 10]}


PATHS: list[tuple[str, Callable[[Cursors], str]]] = [
    ("GET /runs?function= (first page of 50)", lambda _c: "/runs?function=bench-runs"),
    ("GET /runs?function=&before= (90% deep)",
     lambda c: f"/runs?function=bench-runs&before={c['deep']}"),
    ("GET /api/runs?function= (first page)", lambda _c: "/api/runs?function=bench-runs"),
    ("GET /api/runs?function=&before= (90% deep)",
     lambda c: f"/api/runs?function=bench-runs&before={c['deep']}"),
    ("GET / (home: newest 50 per function)", lambda _c: "/"),
    ("GET /runs?status=failed (1% of runs)", lambda _c: "/runs?function=bench-runs&status=failed"),
    ("GET /api/runs?status=failed (1% of runs)",
     lambda _c: "/api/runs?function=bench-runs&status=failed"),
    ("GET /api/runs?status=failed&before= (90% deep)",
     lambda c: f"/api/runs?function=bench-runs&status=failed&before={c['failed']}"),
    ("GET /api/runs?status=running (no match)",
     lambda _c: "/api/runs?function=bench-runs&status=running"),
    ("GET /bulk/cancel?status=failed (up to 1,000)",
     lambda _c: "/bulk/cancel?function=bench-runs&status=failed"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None, help="default 100,000")
    parser.add_argument("--samples", type=int, default=None, help=f"default {SAMPLES}")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_RUNS:,} runs and {QUICK_SAMPLES} samples unless given")
    args = parser.parse_args(argv)
    runs = args.runs or (QUICK_RUNS if args.quick else 100_000)
    samples = args.samples or (QUICK_SAMPLES if args.quick else SAMPLES)
    if runs < 1000:
        parser.error("--runs must be at least 1,000 (the deep cursors need 10 failed runs)")
    server = RedisServer().start()
    r = redis.Redis.from_url(server.url)
    print(f"redis-server on {server.url}; filling the stores", flush=True)
    big_steps = make_steps(server.url, "bench_big", "bench-runs")
    small_steps = make_steps(server.url, "bench_small", "bench-runs")
    big_cursors = cursors(fill(big_steps, "bench-runs", runs))
    small_ids = fill(small_steps, "bench-runs", 100)
    small_cursors = {"deep": small_ids[50], "failed": small_ids[99]}
    rows = []
    with TestClient(create_app(big_steps)) as big, TestClient(create_app(small_steps)) as small:
        big_store, small_store = big_steps.runtime.store, small_steps.runtime.store
        assert isinstance(big_store, RedisStore) and isinstance(small_store, RedisStore)
        big_loads, small_loads = Loads(big_store), Loads(small_store)
        for name, path in PATHS:
            at_big, at_small = measure([(big, path(big_cursors), big_loads),
                                        (small, path(small_cursors), small_loads)], r, samples)
            rows.append((name, at_big, at_small))
    print(f"\n{runs:,} runs against 100 runs of one function (in-process ASGI, "
          f"{samples} samples each, interleaved):")
    report(rows)
    most = max(row[1]["loads"] for row in rows[:-1])
    print(f"\nmost runs any page loaded: {most:.0f} of {runs:,} (limit + 1 from the index, "
          f"plus the cursor's run); the bulk page loaded {rows[-1][1]['loads']:.0f} "
          f"(its cap is 1,000)")
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
