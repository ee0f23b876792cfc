"""Flow control on a real Redis with a real Celery worker: concurrency across worker threads,
priority, the broker's message priority, and why events started no run."""

from __future__ import annotations

import json
import threading
import time

import redis

from celery_steps import (
    BatchEvents,
    Concurrency,
    Context,
    Debounce,
    Priority,
    RateLimit,
    Singleton,
)
from tests.conftest import Deployment, RedisServer, wait_until
from tests.integration.apps import redis_app, running_worker


def test_a_concurrency_limit_of_one_runs_one_execution_at_a_time(
    redis_server: RedisServer, deployment: Deployment,
) -> None:
    app, steps = redis_app(redis_server.url(), deployment.broker,
        steps_store_url=deployment.store)
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
    redis_server: RedisServer, deployment: Deployment,
) -> None:
    app, steps = redis_app(redis_server.url(), deployment.broker,
        steps_store_url=deployment.store)

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


def test_a_high_priority_run_overtakes_a_backlog_of_low_priority_runs(
    redis_server: RedisServer,
) -> None:
    # given a function that runs one execution at a time, with a priority from the event
    app, steps = redis_app(redis_server.url())
    started: list[int] = []

    @steps.function(id="one-by-one", trigger="t/prio", concurrency=Concurrency(1),
                    priority=Priority("event.data.priority"))
    def one_by_one(ctx: Context) -> int:
        n = int(ctx.event.data["n"])

        def work() -> int:
            started.append(n)
            time.sleep(0.25)  # the work itself: it holds the only place meanwhile
            return n

        return int(ctx.step.run("work", work))

    client = redis.Redis.from_url(redis_server.url())
    queue = f"{steps.settings.namespace}:gate:conc:{{fn:one-by-one:}}:q"
    with running_worker(app, concurrency=4):
        # when a backlog of eight low-priority runs is waiting
        lows = steps.send([{"name": "t/prio", "data": {"n": n, "priority": 0}}
                           for n in range(8)])
        wait_until(lambda: client.zcard(queue) >= 5, message="a backlog in the gate's queue")
        # and a run with the highest priority arrives after them
        [high_event] = steps.send("t/prio", data={"n": 99, "priority": 600})
        [high] = steps.runs_for_event(high_event)
        member = f"r|one-by-one|{high.id}"
        wait_until(lambda: client.zscore(queue, member) is not None or 99 in started,
                   message="the high-priority run to ask for a place")
        remaining = set(range(8)) - set(started)
        runs = [steps.wait_for_run(r.id, timeout=60)
                for e in [*lows, high_event] for r in steps.runs_for_event(e)]

    # then it started before every low-priority run still waiting when it asked
    assert [r.status for r in runs] == ["completed"] * 9
    assert len(remaining) >= 3
    assert all(started.index(99) < started.index(n) for n in remaining), (started, remaining)


def test_a_priority_function_publishes_its_runs_with_the_brokers_message_priority(
    redis_server: RedisServer,
) -> None:
    # given a Redis broker (kombu's priority steps: 0 served first) and no worker
    app, steps = redis_app(redis_server.url())

    @steps.function(id="ranked", trigger="t/ranked", priority=Priority("event.data.p"))
    def ranked(ctx: Context) -> None:
        return None

    client = redis.Redis.from_url(redis_server.url())
    queue = app.conf.task_default_queue

    def run_messages(key: str) -> list[str]:
        bodies = [json.loads(raw) for raw in client.lrange(key, 0, -1)]
        return [b["headers"]["argsrepr"] for b in bodies
                if b["headers"]["task"] == "celery_steps.fn.ranked"]

    # when events of priority 120, 0 and -600 are routed
    ids = steps.send([{"name": "t/ranked", "data": {"p": p}} for p in (120, 0, -600)])
    for event_id in ids:
        steps.runtime.route(event_id)
    urgent, normal, late = (steps.runtime.store.routed_runs(e)[0] for e in ids)

    # then each run's message waits in the list of its priority step
    assert run_messages(queue) == [repr([urgent])]
    assert run_messages(f"{queue}\x06\x163") == [repr([normal])]
    assert run_messages(f"{queue}\x06\x169") == [repr([late])]


def test_skipped_starts_are_recorded_on_redis_with_their_reasons(
    redis_server: RedisServer,
) -> None:
    app, steps = redis_app(redis_server.url())

    @steps.function(id="daily", trigger="t/ping", rate_limit=RateLimit(1, "1d"))
    def daily(ctx: Context) -> None:
        return None

    @steps.function(id="latest", trigger="t/ping", debounce=Debounce("1h"))
    def latest(ctx: Context) -> None:
        return None

    @steps.function(id="solo", trigger="t/ping", singleton=Singleton())
    def solo(ctx: Context) -> None:
        ctx.step.sleep("hold", "1h")

    with running_worker(app):
        [first] = steps.send("t/ping")
        started = {r.function_id: r.id for r in steps.runs_for_event(first)}
        wait_until(lambda: steps.get_run(started["solo"]).status == "sleeping",
                   message="the singleton run to be active")
        [second] = steps.send("t/ping")
        assert steps.runs_for_event(second) == []  # (waits for its routing)
        info = steps.get_event(second)

    assert sorted(started) == ["daily", "latest", "solo"]
    assert info.run_ids == []
    assert sorted((s.function_id, s.reason, s.run_id) for s in info.skipped) == [
        ("daily", "rate_limited", None), ("latest", "debounced", started["latest"]),
        ("solo", "singleton", started["solo"])]
