"""An event whose routing task dies is still routed: its routing timer stays armed until the
routing completes. Found by the chaos suite (tests/chaos): cron ticks and confirmations whose
routing task died (a pool process killed, a crash point) were never routed, and a wait they
should have resumed waited until its timeout."""

from __future__ import annotations

import pytest

from celery_steps import Context, faults
from celery_steps.runtime import timers
from tests.conftest import RedisServer, wait_until
from tests.integration.apps import redis_app, running_worker

pytestmark = pytest.mark.redis

REDO_S = 1.0  # a claimed timer comes due again this long after its claim (30 s by default)


class RoutingDied(Exception):
    """Stands for the process of a routing task dying (the task's message is acked)."""


def test_an_event_whose_routing_task_dies_is_routed_again_and_resumes_the_wait(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a run waiting for a t/go event, on a worker whose timer poller publishes routings
    monkeypatch.setattr(timers, "REDO_MS", int(REDO_S * 1000))
    app, steps = redis_app(redis_server.url())

    @steps.function(id="waiter", trigger="t/start")
    def waiter(ctx: Context) -> bool:
        return ctx.step.wait_for_event("go", event="t/go", timeout="1h") is not None

    deaths: list[str] = []

    def die_once(point: str, label: str) -> None:
        if not deaths:
            deaths.append(point)
            raise RoutingDied(point)

    with running_worker(app):
        [start] = steps.send("t/start")
        [run] = wait_until(lambda: steps.runs_for_event(start), timeout=10,
                           message="the waiter's run")
        wait_until(lambda: steps.get_run(run.id).status == "waiting", timeout=10,
                   message="the run to wait for t/go")

        # when t/go is sent and its routing task dies after starting runs, before resuming
        # the waiter
        faults.arm("route.after_start_runs", label="t/go", action=die_once)
        try:
            [go] = steps.send("t/go")
            wait_until(lambda: deaths, timeout=10, message="the routing to die")

            # then the routing timer routes it again, and the wait is resumed by it
            done = steps.wait_for_run(run.id, timeout=10 + REDO_S)
        finally:
            faults.disarm()

    assert deaths == ["route.after_start_runs"]
    assert done.status == "completed"
    assert done.output is True
    assert steps.get_event(go).routed
