"""Flow-control options that apply together with debounce or batches, on a real Redis with a
real Celery worker and real time: a rate limit admits each event before the debounce, and a
throttle paces the starts of debounced runs and of batches."""

from __future__ import annotations

import threading
import time
from typing import Any

from celery_steps import (
    BatchEvents,
    CelerySteps,
    Context,
    Debounce,
    RateLimit,
    SkippedStart,
    Throttle,
)
from tests.conftest import RedisServer, wait_until
from tests.integration.apps import redis_app, running_worker

PERIOD = 3.0  # the throttles' period: one start per PERIOD seconds
SLACK = 1.0  # how much earlier than PERIOD a paced start may be seen (worker latency)


class Starts:
    """When each run's first step ran (monotonic seconds), by a label the handler gives."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self._lock = threading.Lock()

    def mark(self, label: str) -> float:
        with self._lock:
            self.at.setdefault(label, time.monotonic())
            return self.at[label]


def send_routed(steps: CelerySteps, name: str, data: dict[str, Any]) -> str:
    """Send one event and wait until the worker has routed it; its id."""
    [event_id] = steps.send(name, data=data)
    steps.runs_for_event(event_id)  # waits for its routing
    return event_id


def test_a_rate_limit_admits_each_event_before_the_debounce_on_a_real_worker(
    redis_server: RedisServer,
) -> None:
    # given a debounced function that also admits at most two events an hour
    app, steps = redis_app(redis_server.url())

    @steps.function(id="sync", trigger="t/edit", debounce=Debounce("2s"),
                    rate_limit=RateLimit(2, "1h"))
    def sync(ctx: Context) -> int:
        return int(ctx.event.data["rev"])

    with running_worker(app):
        # when three edits arrive in one burst (each routed before the next is sent)
        first, second, third = (send_routed(steps, "t/edit", {"rev": n}) for n in range(3))
        [run] = steps.runs_for_event(first)
        for later in (second, third):
            assert steps.runs_for_event(later) == []
        ended = steps.wait_for_run(run.id, timeout=30)

    # then one run started, with the last admitted event: the third never joined it
    assert (ended.status, ended.output) == ("completed", 1)
    assert [r.id for r in steps.list_runs(function_id="sync")] == [run.id]
    assert steps.get_event(second).skipped == [
        SkippedStart(function_id="sync", reason="debounced", run_id=run.id)]
    assert steps.get_event(third).skipped == [
        SkippedStart(function_id="sync", reason="rate_limited")]


def test_a_throttle_paces_the_starts_of_debounced_runs_on_a_real_worker(
    redis_server: RedisServer,
) -> None:
    # given a function debounced per user, throttled to one start per PERIOD
    app, steps = redis_app(redis_server.url())
    starts = Starts()

    @steps.function(id="digest", trigger="t/note", throttle=Throttle(1, f"{PERIOD:g}s"),
                    debounce=Debounce("1s", key="event.data.user"))
    def digest(ctx: Context) -> str:
        user = str(ctx.event.data["user"])
        ctx.step.run("mark", starts.mark, user)
        return user

    with running_worker(app):
        # when two users' bursts end at the same time
        ann, bob = (steps.send("t/note", data={"user": u})[0] for u in ("ann", "bob"))
        runs = [steps.runs_for_event(e)[0] for e in (ann, bob)]
        # then one run starts and completes while the other still waits for the throttle
        wait_until(lambda: sorted(r.status for r in steps.list_runs(function_id="digest"))
                   == ["completed", "queued"], timeout=20,
                   message="one debounced run done, the other held by the throttle")
        ended = [steps.wait_for_run(r.id, timeout=30) for r in runs]

    # and both complete, their starts a throttle period apart
    assert sorted(r.output for r in ended) == ["ann", "bob"]
    assert abs(starts.at["ann"] - starts.at["bob"]) >= PERIOD - SLACK, starts.at


def test_a_throttle_paces_the_starts_of_batches_on_a_real_worker(
    redis_server: RedisServer,
) -> None:
    # given a function that takes events in batches of two, throttled to one start per PERIOD
    app, steps = redis_app(redis_server.url())
    starts = Starts()

    @steps.function(id="bulk", trigger="t/row", batch_events=BatchEvents(2, "1m"),
                    throttle=Throttle(1, f"{PERIOD:g}s"))
    def bulk(ctx: Context) -> list[int]:
        rows = [int(e.data["n"]) for e in ctx.events]
        ctx.step.run("mark", starts.mark, str(rows))
        return rows

    with running_worker(app):
        # when four events fill two batches at once (each routed before the next is sent)
        ids = [send_routed(steps, "t/row", {"n": n}) for n in range(4)]
        [first], [second] = steps.runs_for_event(ids[0]), steps.runs_for_event(ids[2])
        # then the second batch waits for the throttle while the first completes
        wait_until(lambda: (steps.get_run(first.id).status, steps.get_run(second.id).status)
                   == ("completed", "queued"), timeout=20,
                   message="the first batch done, the second held by the throttle")
        ended = [steps.wait_for_run(r.id, timeout=30) for r in (first, second)]

    # and each batch ran with its two events, a throttle period apart
    assert [r.output for r in ended] == [[0, 1], [2, 3]]
    assert steps.get_event(ids[1]).skipped == [
        SkippedStart(function_id="bulk", reason="batched", run_id=first.id)]
    assert starts.at["[2, 3]"] - starts.at["[0, 1]"] >= PERIOD - SLACK, starts.at
