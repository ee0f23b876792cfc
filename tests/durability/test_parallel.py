"""``ctx.step.parallel``: a long branch is executed once, never alongside itself."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.durability.conftest import Cluster

pytestmark = pytest.mark.slow

LEASE_TTL = 1.0


def test_a_parallel_branch_running_longer_than_four_lease_ttls_executes_once(
    cluster_factory: Callable[..., Cluster],
) -> None:
    # given two workers and a function whose parallel branch runs for 6 lease TTLs
    cluster = cluster_factory(steps_lease_ttl=LEASE_TTL)
    app = cluster.app
    for name in ("w1", "w2"):
        cluster.start_worker(name)
    for name in ("w1", "w2"):
        cluster.wait_ready(name)

    # when the run executes
    [event_id] = app.steps.send("dur/fan-out", data={"seconds": 6 * LEASE_TTL})
    [run] = app.steps.runs_for_event(event_id)
    run = app.steps.wait_for_run(run.id, timeout=30)

    # then it completes and the long branch was executed exactly once
    executions: dict[str, dict[str, float]] = {}
    for entry in app.records("slow-branch"):
        executions.setdefault(entry["execution"], {})[entry["phase"]] = entry["t"]
    assert run.status == "completed"
    assert run.output == ["slow", "quick"]
    assert len(executions) == 1, f"the branch ran {len(executions)} times: {executions}"
