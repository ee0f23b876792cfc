"""A worker bootstep that runs the timer poller (disable with ``steps_timer_poller=False``
or ``celery worker --without-steps-timers``)."""

from __future__ import annotations

from typing import Any

import click
from celery import Celery, bootsteps

from celery_steps.integration.poller import TimerPoller


class TimerPollerStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Starts one :class:`TimerPoller` per worker node."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, without_steps_timers: bool = False, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.disabled = without_steps_timers
        self.poller: TimerPoller | None = None

    def start(self, parent: Any) -> None:
        from celery_steps.extension import CelerySteps

        steps = CelerySteps.from_app(parent.app)
        if self.disabled or not steps.settings.timer_poller:
            return
        self.poller = TimerPoller(steps)
        self.poller.start()

    def stop(self, parent: Any) -> None:
        if self.poller is not None:
            self.poller.stop()
            self.poller = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)


def add_worker_option(app: Celery) -> None:
    """``celery worker --without-steps-timers``: run no timer poller on this node."""
    app.user_options["worker"].add(
        click.Option(
            ["--without-steps-timers"],
            is_flag=True,
            default=False,
            help="Do not run the celery-steps timer poller on this worker.",
        )
    )
