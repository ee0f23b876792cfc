"""Delayed events (``Event.ts`` in the future) start their functions when they are due."""

from __future__ import annotations

import time

import pytest

from celery_steps import Context
from tests.conftest import RedisServer, wait_until
from tests.integration.apps import redis_app, running_worker

pytestmark = pytest.mark.redis


def test_an_event_due_after_the_dedupe_window_still_starts_its_function_at_its_time(
    redis_server: RedisServer,
) -> None:
    # given a 1-second dedupe window and a worker
    app, steps = redis_app(redis_server.url(), steps_event_dedupe_window=1)

    @steps.function(id="later", trigger="t/later")
    def later(ctx: Context) -> int:
        return int(ctx.step.run("now", lambda: int(time.time() * 1000)))

    with running_worker(app):
        # when an event due in 3 seconds is sent
        due = steps.clock.now_ms() + 3000
        [event_id] = steps.send("t/later", ts=due)

        # then its function runs at that time (not before), though the window has passed
        started = wait_until(lambda: steps.list_runs(function_id="later"), timeout=8,
                             message="the delayed event to start a run")
        run = steps.wait_for_run(started[0].id, timeout=10)

    assert run.event_ids == [event_id]
    assert run.status == "completed"
    assert run.output >= due - 50  # fired by the routing timer, at ts (50 ms of clock slack)
