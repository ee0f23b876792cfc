"""A worker bootstep that runs the timer poller (disable with ``steps_timer_poller=False``
or ``celery worker --without-steps-timers``), handing due wake-ups to the worker's own pool
when it has room (``steps_wake_local``, see ``integration.local``)."""

from __future__ import annotations

from typing import Any

import click
from celery import Celery, bootsteps

from celery_steps.integration.children import ChildHeartbeat
from celery_steps.integration.local import LOCAL_ATTR, WorkerPool
from celery_steps.runtime import Runtime
from celery_steps.runtime.timers import TimerPoller

RUNTIME_ATTR = "_celery_steps_runtime"


def runtime_of(app: Celery) -> Runtime | None:
    """The runtime ``install()`` put on ``app``, if any."""
    return getattr(app, RUNTIME_ATTR, None)


class TimerPollerStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Starts one :class:`TimerPoller` per worker node."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, without_steps_timers: bool = False, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.disabled = without_steps_timers
        self.poller: TimerPoller | None = None

    def start(self, parent: Any) -> None:
        runtime = runtime_of(parent.app)
        if runtime is None or self.disabled or not runtime.settings.timer_poller:
            return
        local = None
        if runtime.settings.wake_local and getattr(parent, "use_eventloop", False):
            local = WorkerPool(parent.app, runtime, parent)
            setattr(parent, LOCAL_ATTR, local)
        spread = getattr(parent, "concurrency", None)
        self.poller = TimerPoller(runtime, local, spread=spread if isinstance(spread, int) else 1)
        self.poller.start()

    def stop(self, parent: Any) -> None:
        if self.poller is not None:
            self.poller.stop()
            self.poller = None
        local = getattr(parent, LOCAL_ATTR, None)
        if local is not None:
            setattr(parent, LOCAL_ATTR, None)
            local.close()

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)


class ChildHeartbeatStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Beats for the pool's processes and reaps the host's dead ones (``integration.children``)."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.beater: ChildHeartbeat | None = None

    def start(self, parent: Any) -> None:
        runtime = runtime_of(parent.app)
        if runtime is None:
            return
        self.beater = ChildHeartbeat(runtime, parent)
        self.beater.start()

    def stop(self, parent: Any) -> None:
        if self.beater is not None:
            self.beater.stop()
            self.beater = None

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
