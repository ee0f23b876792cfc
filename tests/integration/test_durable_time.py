"""Sleeps and waits against a real Redis and real workers: no broker ETA, restarts survive."""

from __future__ import annotations

import time
from typing import Any

import redis

from celery_steps import Context
from tests.conftest import Deployment, RedisServer, wait_until
from tests.integration.apps import redis_app, running_worker


def counter(server: RedisServer, ns: str) -> Any:
    client = redis.Redis.from_url(server.url())

    def bump(name: str) -> int:
        return int(client.incr(f"{ns}:n:{name}"))

    def read(name: str) -> int:
        return int(client.get(f"{ns}:n:{name}") or 0)

    return bump, read


def test_a_sleep_longer_than_the_visibility_timeout_wakes_exactly_once(
    redis_server: RedisServer, deployment: Deployment,
) -> None:
    # given a broker that would redeliver any unacked message after one second
    app, steps = redis_app(redis_server.url(), deployment.broker,
        steps_store_url=deployment.store,
                           broker_transport_options={"visibility_timeout": 1})
    ns = steps.settings.namespace
    bump, read = counter(redis_server, ns)

    @steps.function(id="long-nap", trigger="t/nap")
    def long_nap(ctx: Context) -> int:
        ctx.step.run("before", lambda: bump("before"))
        ctx.step.sleep("nap", "3s")
        return int(ctx.step.run("after", lambda: bump("after")))

    with running_worker(app):
        [event_id] = steps.send("t/nap")
        [run] = steps.runs_for_event(event_id)
        wait_until(lambda: steps.get_run(run.id).status == "sleeping", message="sleeping")
        run = steps.wait_for_run(run.id, timeout=30)
        time.sleep(1.5)  # give a wrongly redelivered message time to show up

    # then the run slept past several visibility timeouts and woke once
    assert run.status == "completed" and run.output == 1
    assert (read("before"), read("after")) == (1, 1)
    assert run.ended_at is not None
    assert (run.ended_at - run.created_at).total_seconds() >= 3


def test_runs_sleeping_and_waiting_survive_every_worker_stopping(
    redis_server: RedisServer, deployment: Deployment,
) -> None:
    app, steps = redis_app(redis_server.url(), deployment.broker,
        steps_store_url=deployment.store)
    ns = steps.settings.namespace
    bump, read = counter(redis_server, ns)

    @steps.function(id="sleeper", trigger="t/sleeper")
    def sleeper(ctx: Context) -> int:
        ctx.step.run("before", lambda: bump("sleeper-before"))
        ctx.step.sleep("nap", "3s")
        return int(ctx.step.run("after", lambda: bump("sleeper-after")))

    @steps.function(id="waiter", trigger="t/waiter")
    def waiter(ctx: Context) -> Any:
        ctx.step.run("before", lambda: bump("waiter-before"))
        reply = ctx.step.wait_for_event("reply", event="t/reply", timeout="1h",
                                        match="data.ticket")
        ctx.step.run("after", lambda: bump("waiter-after"))
        return None if reply is None else reply.data

    # given one run sleeping and one waiting
    with running_worker(app):
        sleeping = steps.runs_for_event(steps.send("t/sleeper")[0])[0].id
        waiting = steps.runs_for_event(steps.send("t/waiter", data={"ticket": 4})[0])[0].id
        wait_until(lambda: steps.get_run(sleeping).status == "sleeping", message="sleeping")
        slept_at = time.monotonic()
        wait_until(lambda: steps.get_run(waiting).status == "waiting", message="waiting")

    # when every worker is down past the wake time and the awaited event arrives meanwhile
    time.sleep(max(0.0, slept_at + 3.5 - time.monotonic()))
    steps.send("t/reply", data={"ticket": 4, "text": "thanks"})
    assert steps.get_run(sleeping).status == "sleeping"

    # then a restarted worker wakes each run once, late but not lost
    with running_worker(app):
        slept = steps.wait_for_run(sleeping, timeout=30)
        waited = steps.wait_for_run(waiting, timeout=30)

    assert slept.status == "completed" and slept.output == 1
    assert waited.status == "completed" and waited.output == {"ticket": 4, "text": "thanks"}
    assert [read(n) for n in ("sleeper-before", "sleeper-after", "waiter-before",
                              "waiter-after")] == [1, 1, 1, 1]


def test_one_event_resumes_its_waiter_among_many_in_constant_lookups(
    redis_server: RedisServer, deployment: Deployment,
) -> None:
    app, steps = redis_app(redis_server.url(), deployment.broker,
        steps_store_url=deployment.store)

    @steps.function(id="many", trigger="t/many")
    def many(ctx: Context) -> Any:
        reply = ctx.step.wait_for_event("reply", event="t/answer", timeout="1h",
                                        match="data.n")
        return None if reply is None else reply.data["n"]

    with running_worker(app, concurrency=8):
        run_ids = [steps.runs_for_event(e)[0].id
                   for e in steps.send([{"name": "t/many", "data": {"n": i}} for i in range(40)])]
        wait_until(lambda: all(steps.get_run(r).status == "waiting" for r in run_ids),
                   timeout=30, message="all waiting")
        steps.send("t/answer", data={"n": 17})
        done = steps.wait_for_run(run_ids[17], timeout=20)

        assert done.output == 17
        assert sum(steps.get_run(r).status == "waiting" for r in run_ids) == 39
