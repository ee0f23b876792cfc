"""``ctx.step.wait_for_event`` gets every matching event sent after the wait began."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pytest
from celery import Celery

from celery_steps import CelerySteps, Context
from celery_steps.clock import Clock
from celery_steps.store.base import Suspension
from tests.conftest import RedisServer, wait_until
from tests.integration.apps import redis_app, running_worker

pytestmark = pytest.mark.redis


def declare(steps: CelerySteps) -> None:
    @steps.function(id="asker", trigger="t/ask", retries=0)
    def asker(ctx: Context) -> int | None:
        answer = ctx.step.wait_for_event("w", event="t/answer", timeout="5s")
        return None if answer is None else int(answer.data["n"])


@pytest.fixture
def worker_steps(redis_server: RedisServer) -> Iterator[CelerySteps]:
    """A worker (threads, in this process) serving the "asker" function."""
    app, steps = redis_app(redis_server.url())
    declare(steps)
    with running_worker(app):
        yield steps


def is_waiting(steps: CelerySteps, run_id: str) -> bool:
    return any(s.id == "w" and s.status == "waiting" for s in steps.get_run(run_id).steps)


def test_an_event_sent_once_the_wait_shows_waiting_resumes_it_every_time(
    worker_steps: CelerySteps,
) -> None:
    steps = worker_steps
    for n in range(5):
        # given a run waiting for t/answer
        [event_id] = steps.send("t/ask")
        [run] = steps.runs_for_event(event_id)
        wait_until(partial(is_waiting, steps, run.id), message="the wait to begin")

        # when the answer is sent right away
        steps.send("t/answer", data={"n": n})

        # then the wait gets it
        assert steps.wait_for_run(run.id, timeout=10).output == n


def test_an_event_routed_just_after_the_wait_began_but_before_it_was_stored_resumes_it(
    worker_steps: CelerySteps, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given routing that runs as soon as an event is sent (no broker hop), and an answer sent
    # (and routed) just as the run suspends on its wait: after the wait began, before the
    # suspension is written
    steps = worker_steps
    runtime = steps.runtime
    monkeypatch.setattr(runtime.transport, "publish_route", runtime.route)
    store = runtime.store
    suspend = store.suspend
    answered: list[str] = []

    def answer_while_suspending(run_id: str, token: str, suspension: Suspension) -> bool | None:
        if suspension.step_key == "w" and not answered:
            answered.append(run_id)
            steps.send("t/answer", data={"n": 7})
        return suspend(run_id, token, suspension)

    monkeypatch.setattr(store, "suspend", answer_while_suspending)

    # when a run waits for it
    [event_id] = steps.send("t/ask")
    [run] = steps.runs_for_event(event_id)

    # then the wait gets the answer (it does not time out)
    run = steps.wait_for_run(run.id, timeout=15)
    assert answered == [run.id]
    assert run.output == 7, "the wait timed out: it missed the answer"


class LateClock(Clock):
    """A sender's clock running behind the workers' by ``behind_ms``."""

    def __init__(self, behind_ms: int) -> None:
        self.behind_ms = behind_ms

    def now_ms(self) -> int:
        return super().now_ms() - self.behind_ms


def test_an_event_from_a_sender_whose_clock_is_2_seconds_behind_still_resumes_a_wait(
    worker_steps: CelerySteps, redis_server: RedisServer,
) -> None:
    # given a run waiting for t/answer, and a sender whose clock is 2 s behind the worker's
    steps = worker_steps
    sender_app = Celery("late-sender", broker=redis_server.url(), set_as_current=False)
    sender_app.conf.update(steps_namespace=steps.settings.namespace,
                           task_default_queue=steps.app.conf.task_default_queue,
                           broker_connection_retry_on_startup=True)
    sender = CelerySteps(sender_app, clock=LateClock(2000))
    [event_id] = steps.send("t/ask")
    [run] = steps.runs_for_event(event_id)
    wait_until(lambda: is_waiting(steps, run.id), message="the wait to begin")

    # when that sender sends the answer after the wait began
    sender.send("t/answer", data={"n": 7})

    # then the wait gets it
    run = steps.wait_for_run(run.id, timeout=15)
    assert run.output == 7, "the wait timed out: it took the answer as sent before it began"
