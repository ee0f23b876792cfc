"""Errors raised by the handler's own code, outside any step, are retried like a step's."""

from __future__ import annotations

from celery_steps import Context, RetryAfterError
from celery_steps.clock import FakeClock
from celery_steps.testing import eager_steps, run_function


def test_a_retry_after_error_raised_by_the_handler_itself_retries_the_run_after_its_delay(
) -> None:
    # given a handler that asks, outside any step, to be retried 0.1 s later on its first attempt
    steps = eager_steps()
    clock = FakeClock()
    attempts: list[tuple[int, int]] = []

    @steps.function(id="not-yet", trigger="t/not-yet", retries=2)
    def not_yet(ctx: Context) -> str:
        attempts.append((ctx.attempt, clock.now_ms()))
        if ctx.attempt == 0:
            raise RetryAfterError("the upstream is not ready", 0.1)
        return "done"

    # when it runs
    result = run_function(not_yet, clock=clock)

    # then the run is retried once, no sooner than asked, and completes
    assert result.status == "completed", result.error
    assert result.output == "done"
    assert [attempt for attempt, _ in attempts] == [0, 1]
    assert attempts[1][1] - attempts[0][1] >= 100
