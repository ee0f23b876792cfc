"""Concurrency limits hold across worker threads on a real Redis."""

from __future__ import annotations

import threading
import time

from celery_steps import BatchEvents, Concurrency, Context
from tests.conftest import RedisServer
from tests.integration.apps import redis_app, running_worker


def test_a_concurrency_limit_of_one_runs_one_execution_at_a_time(
    redis_server: RedisServer, broker_url: str,
) -> None:
    app, steps = redis_app(redis_server.url(), broker_url)
    lock = threading.Lock()
    active = {"now": 0, "peak": 0}

    def busy() -> int:
        with lock:
            active["now"] += 1
            active["peak"] = max(active["peak"], active["now"])
        time.sleep(0.3)
        with lock:
            active["now"] -= 1
        return 1

    @steps.function(id="one-at-a-time", trigger="t/conc", concurrency=Concurrency(1))
    def one_at_a_time(ctx: Context) -> int:
        return int(ctx.step.run("busy", busy))

    with running_worker(app, concurrency=4):
        ids = steps.send([{"name": "t/conc", "data": {"n": n}} for n in range(3)])
        runs = [steps.wait_for_run(steps.runs_for_event(e)[0].id, timeout=30) for e in ids]

    assert [r.status for r in runs] == ["completed"] * 3
    assert active["peak"] == 1


def test_batched_events_reach_one_run_on_a_real_worker(
    redis_server: RedisServer, broker_url: str,
) -> None:
    app, steps = redis_app(redis_server.url(), broker_url)

    @steps.function(id="batch", trigger="t/batch", batch_events=BatchEvents(4, "1m"))
    def batch(ctx: Context) -> list[int]:
        return sorted(int(e.data["n"]) for e in ctx.events)

    with running_worker(app):
        ids = steps.send([{"name": "t/batch", "data": {"n": n}} for n in range(4)])
        run_ids = {r.id for e in ids for r in steps.runs_for_event(e)}
        [run_id] = run_ids
        run = steps.wait_for_run(run_id, timeout=30)

    assert run.output == [0, 1, 2, 3]
    assert len(run.event_ids) == 4
