"""What a run's steps tell about where it is: outputs, wake times, awaited events, children."""

from __future__ import annotations

from celery_steps import CelerySteps, Context
from celery_steps.testing import fire_timers


def test_steps_show_their_output_wake_time_awaited_event_and_child_run(
    steps: CelerySteps,
) -> None:
    @steps.function(id="helper", trigger="t/never")
    def helper(ctx: Context) -> str:
        ctx.step.sleep("nap", "1h")
        return "helped"

    @steps.function(id="tour", trigger="t/tour")
    def tour(ctx: Context) -> None:
        ctx.step.run("fetch", lambda: {"n": 1})
        ctx.step.sleep("pause", "10m")
        ctx.step.invoke("ask", function=helper, timeout="2h")
        ctx.step.wait_for_event("answer", event="t/answer", timeout="1d")

    # given a run sleeping after its first step
    [event_id] = steps.send("t/tour")
    [run] = steps.runs_for_event(event_id)
    fetch, pause = steps.get_run(run.id).steps
    assert fetch.output == {"n": 1} and fetch.wake_at is None
    assert pause.status == "sleeping"
    assert pause.wake_at is not None
    assert pause.wake_at.timestamp() * 1000 == steps.clock.now_ms() + 600_000

    # when the sleep ends and the run invokes a child, which sleeps in turn
    steps.clock.advance(600)  # type: ignore[attr-defined]
    fire_timers(steps)
    ask = steps.get_run(run.id).steps[2]

    # then the invoke step links the child run, which links back
    assert ask.op == "invoke" and ask.status == "waiting" and ask.child_run_id is not None
    assert steps.get_run(ask.child_run_id).parent_run_id == run.id

    # and once the child is done, the wait names the event it waits for
    steps.clock.advance(3600)  # type: ignore[attr-defined]
    fire_timers(steps)
    fire_timers(steps)
    answer = steps.get_run(run.id).steps[3]
    assert steps.get_run(run.id).steps[2].output == "helped"
    assert answer.op == "wait_for_event" and answer.waiting_for == "t/answer"
    assert answer.wake_at is not None
