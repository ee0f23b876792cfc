"""The timer-poller bootstep and the worker option that turns it off on a node."""

from __future__ import annotations

from types import SimpleNamespace

from celery import Celery

from celery_steps import CelerySteps
from celery_steps.integration.bootstep import TimerPollerStep


def make_app(**conf: object) -> Celery:
    app = Celery("boot", set_as_current=False)
    app.conf.update(steps_store_url="memory://", **conf)
    CelerySteps(app)
    return app


def test_the_worker_gets_a_without_steps_timers_option() -> None:
    app = make_app()

    names = {opt.name for opt in app.user_options["worker"]}

    assert "without_steps_timers" in names
    assert TimerPollerStep in app.steps["worker"]


def test_the_poller_runs_by_default_and_stops_with_the_worker() -> None:
    parent = SimpleNamespace(app=make_app())
    step = TimerPollerStep(parent)

    step.start(parent)
    assert step.poller is not None
    step.stop(parent)
    assert step.poller is None


def test_the_option_or_the_setting_keeps_the_poller_off() -> None:
    by_option = SimpleNamespace(app=make_app())
    by_setting = SimpleNamespace(app=make_app(steps_timer_poller=False))
    off_by_option = TimerPollerStep(by_option, without_steps_timers=True)
    off_by_setting = TimerPollerStep(by_setting)

    off_by_option.start(by_option)
    off_by_setting.start(by_setting)

    assert off_by_option.poller is None
    assert off_by_setting.poller is None
