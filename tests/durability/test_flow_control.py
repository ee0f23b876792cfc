"""Flow control holds under concurrent routing and cancellation."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from celery_steps import Context, Singleton
from tests.conftest import RedisServer, wait_until
from tests.durability.conftest import Cluster
from tests.integration.apps import redis_app

LEASE_TTL = 1.0


@pytest.mark.redis
def test_a_singleton_admits_one_run_when_two_events_are_routed_at_the_same_moment(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a singleton function (mode "skip") and two events for its one key
    _, steps = redis_app(redis_server.url())

    @steps.function(id="solo", trigger="t/solo", singleton=Singleton(mode="skip"))
    def solo(ctx: Context) -> int:
        return int(ctx.step.run("work", lambda: 1))

    first, second = steps.send([{"name": "t/solo"}, {"name": "t/solo"}])
    runtime, store = steps.runtime, steps.runtime.store
    claim = store.claim_singleton
    routed_inside: list[str] = []

    def claim_then_route_the_other(gate: str, run_id: str, **kwargs: bool) -> str | None:
        holder = claim(gate, run_id, **kwargs)
        if not routed_inside:
            # the other event's routing runs right after this one claimed the singleton
            routed_inside.append(second)
            runtime.route(second)
        return holder

    monkeypatch.setattr(store, "claim_singleton", claim_then_route_the_other)

    # when both events are routed, the second within the first's admission
    runtime.route(first)
    if not routed_inside:
        runtime.route(second)

    # then exactly one run was started, by one of the two events
    started = {event: store.routed_runs(event) for event in (first, second)}
    assert len(steps.list_runs(function_id="solo")) == 1, started
    assert sorted(len(runs or []) for runs in started.values()) == [0, 1], started


@pytest.mark.slow
def test_cancelling_a_running_run_frees_its_concurrency_slot_for_the_next_run(
    cluster_factory: Callable[..., Cluster],
) -> None:
    # given a Concurrency(limit=1) function whose run is in a long step, renewing its lease
    cluster = cluster_factory(steps_lease_ttl=LEASE_TTL)
    app = cluster.app
    for name in ("w1", "w2"):
        cluster.start_worker(name)
    for name in ("w1", "w2"):
        cluster.wait_ready(name)
    [event_id] = app.steps.send("dur/one-at-a-time", data={"seconds": 30})
    [first] = app.steps.runs_for_event(event_id)
    wait_until(lambda: app.records("one-at-a-time"), timeout=15, message="the long step to start")

    # when the run is cancelled, its step runs on for two lease TTLs (renewing the lease:
    # a scenario delay, not a wait for something), and another event arrives
    app.steps.cancel(first.id)
    time.sleep(2 * LEASE_TTL)
    [event_id] = app.steps.send("dur/one-at-a-time", data={"seconds": 0.1})

    # then the second run starts within a couple of lease TTLs, not after the cancelled step
    [second] = app.steps.runs_for_event(event_id)
    wait_until(lambda: [r for r in app.records("one-at-a-time") if r["run_id"] == second.id],
               timeout=5, message="the second run to start (the slot is still taken)")
    assert app.steps.wait_for_run(second.id, timeout=10).status == "completed"
    assert app.steps.get_run(first.id).status == "cancelled"


def most_at_once(entries: list[dict], same: str | None = None) -> int:
    """The most runs between their start and end at one moment (per value of ``same``)."""
    groups: dict[object, list[tuple[float, int]]] = {}
    for entry in entries:
        moment = (entry["t"], -1 if entry["phase"] == "end" else 1)  # ends first on a tie
        groups.setdefault(entry.get(same) if same else None, []).append(moment)
    peak = 0
    for moments in groups.values():
        running = 0
        for _, change in sorted(moments):
            running += change
            peak = max(peak, running)
    return peak


def ended(cluster: Cluster, log: str, count: int) -> list[dict]:
    wait_until(lambda: sum(e["phase"] == "end" for e in cluster.app.records(log)) >= count,
               timeout=60, message=f"{count} runs to end ({log})")
    return list(cluster.app.records(log))


@pytest.mark.slow
def test_two_concurrency_limits_hold_together_across_two_worker_processes(
    cluster_factory: Callable[..., Cluster],
) -> None:
    # given two worker processes of four threads each, and a function limited to three runs
    # at once and one per user
    cluster = cluster_factory()
    for name in ("w1", "w2"):
        cluster.start_worker(name, pool="threads", concurrency=4)
    for name in ("w1", "w2"):
        cluster.wait_ready(name)

    # when nine runs for three users are sent at once
    users = ["ann", "bob", "cyd", "ann", "bob", "cyd", "ann", "bob", "cyd"]
    cluster.app.steps.send([{"name": "dur/per-user", "data": {"user": u, "seconds": 0.4}}
                            for u in users])
    entries = ended(cluster, "per-user", len(users))

    # then never more than one run of a user, nor more than three in all, held a place
    assert most_at_once(entries, same="user") == 1
    assert most_at_once(entries) == 3
    assert len({e["pid"] for e in entries}) == 2  # both worker processes ran some


@pytest.mark.slow
def test_an_env_scoped_limit_is_shared_by_the_functions_that_name_it(
    cluster_factory: Callable[..., Cluster],
) -> None:
    # given two functions sharing a limit of two ("partner-api"), and two worker processes
    # with eight threads between them
    cluster = cluster_factory()
    for name in ("w1", "w2"):
        cluster.start_worker(name, pool="threads", concurrency=4)
    for name in ("w1", "w2"):
        cluster.wait_ready(name)

    # when five events each start a run of both functions
    cluster.app.steps.send([{"name": "dur/shared", "data": {"seconds": 0.3}}] * 5)
    entries = ended(cluster, "shared", 10)

    # then at most two of the ten runs, whichever function, ran at once
    assert most_at_once(entries) == 2
    finished = cluster.app.steps.list_runs(status="completed")
    assert {r.function_id for r in finished} >= {"shared-a", "shared-b"}
