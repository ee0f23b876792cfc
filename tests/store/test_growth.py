"""Nothing grows without bound: after a workload's retention, its keys are gone.

A real Redis, a CelerySteps executing in process (eager) on it, and the ``AgingClock`` that
ages Redis's TTLs along with the steps clock: every kind of run (completed, slept, waited,
invoked, failed with on_failure, cancelled, flow-controlled), events with duplicates; then
the retention passes, a sweep runs, and the namespace holds what it held before.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from celery_steps import CancelOn, CelerySteps, Context, Debounce, RateLimit, Singleton
from celery_steps.runtime.timers import TimerPoller
from celery_steps.testing import fire_timers
from tests.conftest import AgingClock, RedisServer

DAY = 24 * 3600


def test_a_workload_leaves_no_keys_once_its_retention_has_passed(
    redis_server: RedisServer, namespace: str,
) -> None:
    clock = AgingClock()
    app = Celery(f"growth-{namespace}", set_as_current=False)
    app.conf.update(task_always_eager=True, steps_store_url=redis_server.url(),
                    steps_namespace=namespace, steps_timer_poller=False,
                    steps_run_retention=2 * DAY, steps_retry_backoff_base=0.01)
    steps = CelerySteps(app, clock=clock)
    store = steps.runtime.store
    clock.redis = store  # type: ignore[assignment]

    def keys() -> set[str]:
        return {k.decode() for k in store.r.scan_iter(match=f"{namespace}:*")}

    @steps.function(id="child", trigger="g/never")
    def child(ctx: Context) -> int:
        return 2

    @steps.function(id="tour", trigger="g/tour", cancel_on=[CancelOn("g/stop", match="data.n")],
                    rate_limit=RateLimit(100, "1m"))
    def tour(ctx: Context) -> Any:
        ctx.step.run("a", lambda: 1)
        ctx.step.sleep("nap", "1h")
        ctx.step.invoke("call", function=child)
        return ctx.step.wait_for_event("w", event="g/answer", timeout="1h", match="data.n")

    @steps.function(id="doomed", trigger="g/doom", retries=0,
                    on_failure=lambda ctx: ctx.event.data["run_id"])
    def doomed(ctx: Context) -> None:
        ctx.step.run("boom", lambda: 1 / 0)

    @steps.function(id="solo", trigger="g/solo", singleton=Singleton(key="event.data.n"))
    def solo(ctx: Context) -> int:
        return ctx.step.run("a", lambda: 1)

    @steps.function(id="calm", trigger="g/calm", debounce=Debounce("1m", key="event.data.n"))
    def calm(ctx: Context) -> int:
        return len(ctx.events)

    baseline = keys()

    # given a workload of every kind of run and event
    for n in range(3):
        steps.send("g/tour", {"n": n}, id=f"tour-{n}")
        steps.send("g/tour", {"n": n}, id=f"tour-{n}")  # a duplicate
    steps.send("g/doom")
    for n in range(3):  # each key once: a gate per key, never used again
        steps.send("g/solo", {"n": n})
        steps.send("g/calm", {"n": n})
        steps.send("g/calm", {"n": n})
    steps.send("g/stop", {"n": 2})
    for _ in range(4):
        clock.advance(3600)
        fire_timers(steps)
    steps.send("g/answer", {"n": 1})
    cancelled = steps.list_runs(function_id="tour", limit=10)[0]
    steps.cancel(cancelled.id)
    for _ in range(3):
        clock.advance(3600)
        fire_timers(steps)
    assert {r.status for r in steps.list_runs(limit=100)} <= {"completed", "failed",
                                                            "cancelled"}
    assert keys() - baseline  # the workload left state behind, for now

    # when the retention (and the dedupe window) has passed and a poller swept
    clock.advance(3 * DAY)
    fire_timers(steps)
    TimerPoller(steps.runtime).sweep_once()

    # then only what was there before remains, plus structures bounded by the code, not by
    # the data: this host's live-process registry and the match paths in use per event name
    left = keys() - baseline
    structural = {f"{namespace}:{{s0}}:w:g/answer:paths",
                  f"{namespace}:{{s0}}:w:cancel:g/stop:paths"}
    assert {k for k in left if ":procs:" not in k} <= structural, sorted(left)
    assert len([k for k in left if ":procs:" in k]) <= 1
