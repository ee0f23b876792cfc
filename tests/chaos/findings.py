"""Engine bugs the chaos runs found, each as a minimal in-process scenario.

Each scenario returns what happened, so ``test_findings.py`` asserts the right outcome
(``xfail(strict=True)`` while the bug is open) and the chaos test knows which findings are
still open: a violation a checker tag attributes to an open finding is reported but does not
fail the chaos test; once the scenario behaves, the tag excuses nothing any more.

Both bugs are one mechanism: the timer poller removes a timer as soon as the message it stands
for is published (``poll_once`` -> ``ack_timers``), so from then on that wake-up (or routing)
happens at most once. If the message is lost, or the task executing it dies and is not
redelivered, nothing retries it.
"""

from __future__ import annotations

from datetime import timedelta

from celery_steps import CelerySteps, Context, faults
from celery_steps.clock import FakeClock
from celery_steps.testing import eager_steps, fire_timers

SWEEP_S = 10  # steps_route_sweep_after in these scenarios


class TaskDied(Exception):
    """Stands for a task whose process died at a crash point (its message is gone too)."""


def eager() -> tuple[CelerySteps, FakeClock]:
    """An eager app on the memory store with a fake clock and a 10 s routing sweep."""
    clock = FakeClock()
    return eager_steps(clock, steps_route_sweep_after=SWEEP_S), clock


def sleeping_run_after_its_wake_up_message_is_lost() -> tuple[str, list[str]]:
    """A run sleeps 10 s; its wake-up message is lost once; ten minutes of timers later, its
    status (``"completed"`` when it woke up after all) and the run ids whose message was lost."""
    steps, clock = eager()

    @steps.function(id="sleeper", trigger="t/sleep")
    def sleeper(ctx: Context) -> str:
        ctx.step.sleep("nap", "10s")
        return "woke"

    [event_id] = steps.send("t/sleep")
    [run] = steps.runs_for_event(event_id)
    transport = steps.runtime.transport
    deliver = transport.enqueue_run
    lost: list[str] = []

    def lose_the_first(function_id: str, run_id: str) -> None:
        if not lost:
            lost.append(run_id)
            return
        deliver(function_id, run_id)

    transport.enqueue_run = lose_the_first  # type: ignore[method-assign]
    clock.advance(timedelta(seconds=11))
    fire_timers(steps)
    for _ in range(10):
        clock.advance(timedelta(minutes=1))
        fire_timers(steps)
    return steps.get_run(run.id).status, lost


def wait_after_its_event_routing_died_twice() -> tuple[bool, str, int]:
    """A run waits for ``t/go``; ``t/go`` is sent and its routing dies after starting runs,
    then the sweep's routing dies the same way; five minutes of timers later: whether the
    event was routed, the waiting run's status, and how many routings died."""
    steps, clock = eager()

    @steps.function(id="waiter", trigger="t/start")
    def waiter(ctx: Context) -> bool:
        return ctx.step.wait_for_event("go", event="t/go", timeout="1h") is not None

    [event_id] = steps.send("t/start")
    [run] = steps.runs_for_event(event_id)
    deaths: list[str] = []

    def die_twice(point: str, label: str) -> None:
        if len(deaths) < 2:
            deaths.append(point)
            raise TaskDied(point)

    faults.arm("route.after_start_runs", label="t/go", action=die_twice)
    try:
        [go] = steps.send("t/go")
        clock.advance(timedelta(seconds=SWEEP_S + 1))
        fire_timers(steps)
        for _ in range(5):
            clock.advance(timedelta(minutes=1))
            fire_timers(steps)
    finally:
        faults.disarm()
    return steps.get_event(go).routed, steps.get_run(run.id).status, len(deaths)


def lost_wake_up_is_open() -> bool:
    return sleeping_run_after_its_wake_up_message_is_lost()[0] != "completed"


def lost_routing_is_open() -> bool:
    routed, status, _ = wait_after_its_event_routing_died_twice()
    return not routed or status != "completed"
