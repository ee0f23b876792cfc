"""A cron tick starts exactly one run, even when its task dies half-way."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from celery_steps import EventNotFound
from tests.conftest import wait_until
from tests.durability.conftest import Cluster

pytestmark = pytest.mark.slow


def stored_tick_event(cluster: Cluster, since: datetime) -> str:
    """The id of the tick event the cron task stored (the minute of ``since`` or the next)."""
    steps = cluster.app.steps
    schedule = steps.functions["every-minute"]._crons[0]
    for moment in (since, since + timedelta(minutes=1)):
        fire = schedule.latest_at_or_before(moment)
        assert fire is not None
        event_id = f"cron:every-minute:{schedule.tick_id(fire)}"
        try:
            steps.get_event(event_id)
        except EventNotFound:
            continue
        return event_id
    raise AssertionError("the cron task stored no tick event")


def test_a_cron_tick_whose_task_died_after_storing_its_event_still_starts_one_run(
    cluster_factory: Callable[..., Cluster], tmp_path: Path,
) -> None:
    # given a worker that dies right after a cron tick's event is stored, before its run exists
    cluster = cluster_factory(steps_route_sweep_after=2)
    steps = cluster.app.steps
    crashed = tmp_path / "crashed"
    doomed = cluster.start_worker("doomed", crash_at="cron.after_put_event=every-minute",
                                  crash_once=crashed)
    cluster.wait_ready("doomed")

    # when it runs the tick task of a cron function due now ("* * * * *")
    sent_at = steps.clock.now()
    cluster.app.app.send_task("celery_steps.cron", args=["every-minute", 0])
    wait_until(lambda: crashed.exists() and doomed.poll() is not None, timeout=20,
               message="the worker to die at cron.after_put_event")
    tick_event = stored_tick_event(cluster, sent_at)
    assert steps.list_runs(function_id="every-minute") == []

    # then a fresh worker starts exactly one run for that tick within the routing sweep
    cluster.start_worker("survivor")
    cluster.wait_ready("survivor")
    [run] = wait_until(lambda: steps.list_runs(function_id="every-minute"), timeout=2 + 8,
                       message="the lost tick's run to be started")
    run = steps.wait_for_run(run.id, timeout=15)
    wait_until(lambda: steps.get_event(tick_event).routed, timeout=10,
               message="the tick event to be routed")
    assert run.status == "completed"
    assert run.event_ids == [tick_event]
    assert [r.id for r in steps.list_runs(function_id="every-minute")] == [run.id]
