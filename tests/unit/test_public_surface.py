"""The public facade holds what the docs document, and nothing of the plumbing below it."""

from __future__ import annotations

import celery_steps
from celery_steps import CelerySteps
from celery_steps.testing import eager_steps

DOCUMENTED = {
    "app", "runtime", "settings", "clock", "functions", "from_app", "function", "send",
    "get_run", "get_event", "runs_for_event", "wait_for_run", "list_runs", "cancel", "replay",
}
PLUMBING = {
    "create_and_enqueue", "enqueue", "execute", "publish_route", "start_cron_run",
    "send_step_events", "start_child", "on_run_ended", "resolve_task_step", "safety_wake_at",
    "store", "registry", "executor", "route",
}


def test_the_facade_offers_exactly_the_documented_names() -> None:
    # given a CelerySteps as a user's editor sees it
    steps = eager_steps()

    # when listing what `steps.` completes to
    public = {name for name in dir(steps) if not name.startswith("_")}

    # then it is the documented API, and none of the plumbing
    assert public == DOCUMENTED
    assert not public & PLUMBING


def test_every_public_name_of_the_package_is_importable_from_the_top() -> None:
    for name in celery_steps.__all__:
        assert getattr(celery_steps, name) is not None
    assert celery_steps.CelerySteps is CelerySteps
