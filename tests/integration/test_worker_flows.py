"""End to end with a real redis-server and an in-thread Celery worker."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from celery_steps import CelerySteps, Context, Event, StepError
from tests.conftest import Deployment, RedisServer, wait_until
from tests.integration.apps import redis_app, running_worker

CALLS: dict[str, int] = {}
LOCK = threading.Lock()


def count(name: str) -> int:
    with LOCK:
        CALLS[name] = CALLS.get(name, 0) + 1
        return CALLS[name]


def declare(steps: CelerySteps, admin: redis.Redis) -> None:
    @steps.function(id="process-order", trigger="shop/order.paid", retries=3)
    def process_order(ctx: Context) -> dict[str, Any]:
        order_id = ctx.event.data["order_id"]
        charge = ctx.step.run("charge", lambda: count(f"charge-{order_id}") and f"ch_{order_id}")

        def reserve() -> str:
            if count(f"reserve-{order_id}") == 1:
                raise ConnectionError("warehouse timeout")
            return "reserved"

        stock = ctx.step.run("reserve-stock", reserve)
        ctx.step.run("email", lambda: count(f"email-{order_id}"))
        return {"charge": charge, "stock": stock}

    @steps.function(id="points", trigger="shop/*")
    def points(ctx: Context) -> int:
        return int(ctx.step.run("award", lambda: 10))

    @steps.function(id="hard-fail", trigger="t/hard-fail", retries=1,
                    on_failure=lambda ctx: ctx.event.data["error"]["name"])
    def hard_fail(ctx: Context) -> None:
        ctx.step.run("boom", lambda: 1 / 0)

    @steps.function(id="slow-step", trigger="t/slow-step", retries=0)
    def slow_step(ctx: Context) -> int:
        return int(ctx.step.run("slow", lambda: (count("slow-step") and time.sleep(1.0)) or 1))

    @steps.function(id="flaky-redis", trigger="t/flaky-redis", retries=2)
    def flaky_redis(ctx: Context) -> list[int]:
        out = []
        for i in range(5):
            if i == 2:
                # drop every client connection mid-run, as a Redis failover would
                ctx.step.run("drop", lambda: admin.client_kill_filter(_type="normal",
                                                                      skipme=True) and 0)
            out.append(ctx.step.run("n", lambda i=i: i))
        return out

    @steps.function(id="catcher", trigger="t/catch", retries=0)
    def catcher(ctx: Context) -> str:
        try:
            ctx.step.run("bad", lambda: 1 / 0)
        except StepError as exc:
            return f"caught {exc.name}"
        return "no"


@pytest.fixture(scope="module")
def steps(redis_server: RedisServer, deployment: Deployment) -> Iterator[CelerySteps]:
    CALLS.clear()  # the module runs once per broker
    admin = redis.Redis.from_url(redis_server.url())
    app, ext = redis_app(redis_server.url(), deployment.broker,
        steps_store_url=deployment.store, steps_lease_ttl=2.0)
    declare(ext, admin)
    with running_worker(app):
        yield ext


def test_an_order_flow_completes_with_one_retried_step(steps: CelerySteps) -> None:
    [event_id] = steps.send("shop/order.paid", data={"order_id": 1})
    runs = {r.function_id: r for r in steps.runs_for_event(event_id)}
    run = steps.wait_for_run(runs["process-order"].id, timeout=20)

    assert run.status == "completed"
    assert run.output == {"charge": "ch_1", "stock": "reserved"}
    assert [(s.id, s.status, s.attempts) for s in run.steps] == [
        ("charge", "completed", 1), ("reserve-stock", "completed", 2), ("email", "completed", 1)]
    assert CALLS["charge-1"] == 1 and CALLS["email-1"] == 1
    assert steps.wait_for_run(runs["points"].id).output == 10


def test_a_failed_run_triggers_its_on_failure_run(steps: CelerySteps) -> None:
    [event_id] = steps.send("t/hard-fail")
    run = steps.wait_for_run(steps.runs_for_event(event_id)[0].id, timeout=20)
    failures = wait_until(lambda: steps.list_runs(function_id="hard-fail/on-failure"),
                          message="the on_failure run")
    handler_run = steps.wait_for_run(failures[0].id)

    assert run.status == "failed"
    assert run.steps[0].attempts == 2
    assert handler_run.output == "ZeroDivisionError"


def test_a_duplicate_delivery_of_a_running_run_does_not_execute_it_twice(
    steps: CelerySteps,
) -> None:
    [event_id] = steps.send("t/slow-step")
    [run] = steps.runs_for_event(event_id)
    wait_until(lambda: CALLS.get("slow-step") == 1, message="the slow step to start")
    steps.runtime.enqueue("slow-step", run.id)  # what a broker redelivery looks like
    steps.runtime.enqueue("slow-step", run.id)

    assert steps.wait_for_run(run.id, timeout=20).output == 1
    assert CALLS["slow-step"] == 1


def test_redis_connections_dropped_mid_run_recover_cleanly(steps: CelerySteps) -> None:
    [event_id] = steps.send("t/flaky-redis")
    run = steps.wait_for_run(steps.runs_for_event(event_id)[0].id, timeout=30)

    assert run.status == "completed"
    assert run.output == [0, 1, 2, 3, 4]


def test_step_error_can_be_caught_by_the_handler(steps: CelerySteps) -> None:
    [event_id] = steps.send(Event(name="t/catch"))
    run = steps.wait_for_run(steps.runs_for_event(event_id)[0].id, timeout=20)

    assert run.output == "caught ZeroDivisionError"
