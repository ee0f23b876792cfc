"""A failed run's page shows the tracebacks the engine stored, escaped, in a ``<pre>``."""

from __future__ import annotations

from markupsafe import escape
from starlette.testclient import TestClient

from celery_steps import CelerySteps
from tests.dashboard.conftest import start


def test_a_failed_run_shows_the_stored_traceback_of_its_step_and_its_error(
    client: TestClient, steps: CelerySteps,
) -> None:
    # given a run that failed for good in a step (no stand-in: the engine stored it)
    run_id = start(steps, "shop/explode")
    run = steps.get_run(run_id)
    step_error = run.steps[0].error
    assert run.status == "failed" and step_error is not None and run.error is not None
    traceback = step_error["traceback"]
    assert "Traceback (most recent call last)" in traceback

    # when its page is shown
    page = client.get(f"/runs/{run_id}").text

    # then the traceback is there, escaped, under the step and under the run's error
    assert page.count(f"<pre>{escape(traceback)}</pre>") == 2
