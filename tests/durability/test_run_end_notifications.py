"""What follows a run's end (its waiting parent, its on_failure run) happens even when the
worker dies right after the run's final write."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.durability.conftest import Cluster

pytestmark = pytest.mark.slow

LEASE_TTL = 1.0


def test_a_parent_invoking_a_child_completes_when_the_child_crashed_after_finishing(
    cluster_factory: Callable[..., Cluster], tmp_path: Path,
) -> None:
    # given a worker that dies right after a child run's end is stored, before it is notified
    cluster = cluster_factory(steps_lease_ttl=LEASE_TTL)
    app = cluster.app
    crashed = tmp_path / "crashed"
    doomed = cluster.start_worker("doomed", crash_at="run.after_finish=child",
                                  crash_once=crashed)
    cluster.wait_ready("doomed")

    # when a parent invokes the child (with no timeout) and another worker takes over
    [event_id] = app.steps.send("dur/parent")
    [parent] = app.steps.runs_for_event(event_id)
    wait_until(lambda: crashed.exists() and doomed.poll() is not None, timeout=20,
               message="the worker to die at run.after_finish")
    [child] = app.steps.list_runs(function_id="child")
    assert child.status == "completed"
    cluster.start_worker("survivor")
    cluster.wait_ready("survivor")

    # then the parent's invoke resolves with the child's output and the parent completes
    parent = app.steps.wait_for_run(parent.id, timeout=20)
    assert parent.status == "completed"
    assert parent.output == 42


def test_a_failed_run_that_crashed_after_its_final_write_still_runs_on_failure(
    cluster_factory: Callable[..., Cluster], tmp_path: Path,
) -> None:
    # given a worker that dies right after a failed run's end is stored, before it is notified
    cluster = cluster_factory(steps_lease_ttl=LEASE_TTL)
    app = cluster.app
    crashed = tmp_path / "crashed"
    doomed = cluster.start_worker("doomed", crash_at="run.after_finish=doomed",
                                  crash_once=crashed)
    cluster.wait_ready("doomed")

    # when a function with on_failure fails for good there and another worker takes over
    [event_id] = app.steps.send("dur/doomed")
    [run] = app.steps.runs_for_event(event_id)
    wait_until(lambda: crashed.exists() and doomed.poll() is not None, timeout=20,
               message="the worker to die at run.after_finish")
    assert app.steps.get_run(run.id).status == "failed"
    cluster.start_worker("survivor")
    cluster.wait_ready("survivor")

    # then the on_failure run happens, once
    [handler] = wait_until(lambda: app.steps.list_runs(function_id="doomed/on-failure"),
                           timeout=20, message="the on_failure run")
    handler = app.steps.wait_for_run(handler.id, timeout=15)
    assert handler.status == "completed"
    assert handler.output == "ValueError"
    assert app.count("on-failure") == 1
