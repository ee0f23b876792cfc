"""How due runs reach a worker: handed to its own pool (no broker message), or published in
batches (``steps_wake_local``, ``steps_wake_batch``), on a real broker and worker."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from celery import Celery

from celery_steps import CelerySteps, Concurrency, Context
from celery_steps.runtime import timers
from tests.conftest import Deployment, RedisServer, wait_until
from tests.integration.apps import redis_app, running_worker


@contextmanager
def published(app: Celery) -> Iterator[Counter[str]]:
    """Count the task messages this process publishes to the broker, by task name."""
    sent: Counter[str] = Counter()
    lock = threading.Lock()
    original = app.amqp.send_task_message

    def counting(producer: Any, name: str, message: Any, **kwargs: Any) -> Any:
        with lock:
            sent[name] += 1
        return original(producer, name, message, **kwargs)

    app.amqp.send_task_message = counting  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        app.amqp.send_task_message = original  # type: ignore[method-assign]


def declare_sleepers(steps: CelerySteps, wake_at: datetime) -> None:
    @steps.function(id="sleeper", trigger="t/sleep")
    def sleeper(ctx: Context) -> int:
        ctx.step.sleep_until("nap", wake_at)
        return int(ctx.step.run("after", lambda: ctx.event.data["n"]))


def start_sleepers(steps: CelerySteps, count: int) -> list[str]:
    events = steps.send([{"name": "t/sleep", "data": {"n": n}} for n in range(count)])
    run_ids = [steps.runs_for_event(e, timeout=20)[0].id for e in events]
    wait_until(lambda: all(steps.get_run(r).status == "sleeping" for r in run_ids),
               timeout=20, message="every run asleep")
    return run_ids


def test_a_worker_with_room_resumes_due_runs_without_a_broker_message(
    redis_server: RedisServer, deployment: Deployment, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given sleepers due together, on a worker whose pool has room (the default), and a
    # broker fallback far enough away that a slow (loaded) machine never reaches it
    monkeypatch.setattr(timers, "BUSY_FALLBACK_MS", 120_000)
    app, steps = redis_app(redis_server.url(), deployment.broker,
                           steps_store_url=deployment.store)
    declare_sleepers(steps, datetime.now(timezone.utc) + timedelta(seconds=3))
    with published(app) as sent, running_worker(app):
        run_ids = start_sleepers(steps, 3)

        # when they come due, then each completes
        runs = [steps.wait_for_run(r, timeout=30) for r in run_ids]
        # (counted while the worker runs: a stopping worker gives what it cannot take to
        # the broker, e.g. the routing of a run's function.finished event)
        published_by_now = dict(sent)

    assert [r.output for r in runs] == [0, 1, 2]
    # the 9 dispatches (3 routings, 3 starts, 3 wake-ups) went through the worker's own pool:
    # through the broker (all 9 without the hand-off) at most one that met a consumer
    # hiccup on the way, which falls back to the broker by design
    through_broker = (published_by_now.get("celery_steps.fn.sleeper", 0)
                      + published_by_now.get("celery_steps.route", 0))
    assert through_broker <= 1, published_by_now


def test_without_local_wake_ups_due_runs_are_published_in_batches(
    redis_server: RedisServer, deployment: Deployment,
) -> None:
    # given 8 sleepers due at the same moment and a worker of 4 threads
    app, steps = redis_app(redis_server.url(), deployment.broker,
                           steps_store_url=deployment.store, steps_wake_local=False,
                           steps_wake_batch=20)
    declare_sleepers(steps, datetime.now(timezone.utc) + timedelta(seconds=4))
    with running_worker(app, concurrency=4):
        run_ids = start_sleepers(steps, 8)
        with published(app) as sent:
            runs = [steps.wait_for_run(r, timeout=30) for r in run_ids]

    # then they woke in fewer tasks than runs (spread over the pool's 4 threads)
    assert [r.status for r in runs] == ["completed"] * 8
    assert 1 <= sent["celery_steps.fn.sleeper"] <= 4


def test_a_wake_batch_of_one_publishes_one_task_per_wake_up(
    redis_server: RedisServer, deployment: Deployment,
) -> None:
    app, steps = redis_app(redis_server.url(), deployment.broker,
                           steps_store_url=deployment.store, steps_wake_local=False,
                           steps_wake_batch=1)
    declare_sleepers(steps, datetime.now(timezone.utc) + timedelta(seconds=4))
    with running_worker(app, concurrency=4):
        run_ids = start_sleepers(steps, 4)
        with published(app) as sent:
            runs = [steps.wait_for_run(r, timeout=30) for r in run_ids]

    assert [r.status for r in runs] == ["completed"] * 4
    assert sent["celery_steps.fn.sleeper"] == 4


def test_runs_woken_together_still_respect_their_concurrency_limit(
    redis_server: RedisServer, deployment: Deployment,
) -> None:
    # given 4 runs limited to one at a time, due together, on a worker of 4 threads
    app, steps = redis_app(redis_server.url(), deployment.broker,
                           steps_store_url=deployment.store)
    lock = threading.Lock()
    running: list[int] = []
    most = [0]
    wake_at = datetime.now(timezone.utc) + timedelta(seconds=3)

    def work(n: int) -> int:
        with lock:
            running.append(n)
            most[0] = max(most[0], len(running))
        time.sleep(0.2)
        with lock:
            running.remove(n)
        return n

    @steps.function(id="single", trigger="t/single", concurrency=Concurrency(limit=1))
    def single(ctx: Context) -> int:
        ctx.step.sleep_until("nap", wake_at)
        return int(ctx.step.run("work", work, ctx.event.data["n"]))

    with running_worker(app, concurrency=4):
        events = steps.send([{"name": "t/single", "data": {"n": n}} for n in range(4)])
        run_ids = [steps.runs_for_event(e, timeout=20)[0].id for e in events]
        runs = [steps.wait_for_run(r, timeout=60) for r in run_ids]

    # then every run completed, never two at once
    assert sorted(r.output for r in runs) == [0, 1, 2, 3]
    assert most[0] == 1
