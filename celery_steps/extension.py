"""``CelerySteps``: the public API. Installs durable functions into a Celery app.

Everything here is documented in README.md and docs/; the work happens one layer down, in
:class:`~celery_steps.runtime.Runtime` (see docs/architecture.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from celery import Celery

from celery_steps.clock import Clock
from celery_steps.errors import ConfigurationError
from celery_steps.events import Event, build_events
from celery_steps.functions import (
    Declaration,
    FlowControl,
    Function,
    Handler,
    Registry,
    build_function,
)
from celery_steps.integration import CeleryTransport, install, register_function
from celery_steps.options import (
    BatchEvents,
    CancelOn,
    Concurrency,
    Debounce,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
    Timeouts,
    Trigger,
)
from celery_steps.runs import EventInfo, Run
from celery_steps.runtime import Runtime
from celery_steps.settings import Settings
from celery_steps.store.base import StateStore

EXTENSION_ATTR = "_celery_steps"


class CelerySteps:
    """Durable step functions for a Celery app: ``steps = CelerySteps(app)``."""

    def __init__(
        self,
        app: Celery,
        *,
        store_url: str | None = None,
        namespace: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        if getattr(app, EXTENSION_ATTR, None) is not None:
            raise ConfigurationError(
                "CelerySteps is already installed on this Celery app: use "
                "CelerySteps.from_app(app) to get it"
            )
        self.app = app
        registry = Registry()
        self.runtime = Runtime(app.conf, clock or Clock(), registry,
                               CeleryTransport(app, registry), store_url=store_url,
                               namespace=namespace)
        """The layer below this API (store, routing, execution): for tools and tests."""
        setattr(app, EXTENSION_ATTR, self)
        install(app, self.runtime)

    @classmethod
    def from_app(cls, app: Celery) -> CelerySteps:
        """The extension installed on ``app``."""
        ext = getattr(app, EXTENSION_ATTR, None)
        if ext is None:
            raise ConfigurationError(
                "no CelerySteps on this Celery app: create one with steps = CelerySteps(app)"
            )
        return ext  # type: ignore[no-any-return]

    @property
    def settings(self) -> Settings:
        """The ``steps_*`` settings, read from ``app.conf`` on first use."""
        return self.runtime.settings

    @property
    def clock(self) -> Clock:
        """The one source of time (a ``FakeClock`` in tests)."""
        return self.runtime.clock

    @property
    def store(self) -> StateStore:
        """Deprecated: the state store moved below the facade; use ``steps.runtime.store``."""
        warnings.warn("CelerySteps.store is deprecated: use steps.runtime.store",
                      DeprecationWarning, stacklevel=2)
        return self.runtime.store

    @property
    def functions(self) -> Mapping[str, Function]:
        """Registered functions by id (on_failure handlers included)."""
        return self.runtime.registry.by_id

    # -- declaring functions --------------------------------------------------------------
    def function(
        self,
        *,
        id: str,
        trigger: Trigger | Sequence[Trigger],
        retries: int = 4,
        on_failure: Handler | None = None,
        cancel_on: Sequence[CancelOn] | None = None,
        concurrency: Concurrency | Sequence[Concurrency] | None = None,
        throttle: Throttle | None = None,
        rate_limit: RateLimit | None = None,
        debounce: Debounce | None = None,
        priority: Priority | None = None,
        batch_events: BatchEvents | None = None,
        idempotency: str | None = None,
        timeouts: Timeouts | None = None,
        singleton: Singleton | None = None,
        queue: str | None = None,
        name: str | None = None,
    ) -> Callable[[Handler], Function]:
        """Declare a durable function; the decorated name refers to the :class:`Function`."""
        spec = Declaration(
            id=id, trigger=trigger, retries=retries, on_failure=on_failure,
            cancel_on=cancel_on, timeouts=timeouts, queue=queue, name=name,
            flow=FlowControl(concurrency, throttle, rate_limit, debounce, priority,
                             batch_events, idempotency, singleton),
        )

        def decorate(handler: Handler) -> Function:
            fn = build_function(handler, spec, self.runtime)
            self._add(fn)
            return fn

        return decorate

    def _add(self, fn: Function) -> None:
        taken = self.runtime.registry.by_id
        if fn.id in taken or (fn._on_failure is not None and fn._on_failure.id in taken):
            raise ConfigurationError(
                f"function id {fn.id!r} is declared twice: ids must be unique per app"
            )
        for item in (fn, fn._on_failure):
            if item is not None:
                self.runtime.register(item)
                register_function(self.app, self.runtime, item)

    # -- events ---------------------------------------------------------------------------
    def send(
        self,
        name_or_events: str | Event | Mapping[str, Any] | Sequence[Event | Mapping[str, Any]],
        data: Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        user: Mapping[str, Any] | None = None,
        ts: int | None = None,
    ) -> list[str]:
        """Send events; returns their ids. A duplicate id within 24 hours starts nothing."""
        return self.runtime.accept(build_events(name_or_events, data, id=id, user=user, ts=ts))

    # -- runs -----------------------------------------------------------------------------
    def get_run(self, run_id: str) -> Run:
        """The run with this id; :class:`~celery_steps.RunNotFound` if there is none."""
        return self.runtime.get_run(run_id)

    def runs_for_event(self, event_id: str, *, timeout: float = 10.0) -> list[Run]:
        """Wait up to ``timeout`` seconds for the event to be routed; the runs it started."""
        return self.runtime.runs_for_event(event_id, timeout=timeout)

    def wait_for_run(self, run_id: str, *, timeout: float = 30.0) -> Run:
        """Return the run once it has ended; TimeoutError if it has not within ``timeout``."""
        return self.runtime.wait_for_run(run_id, timeout=timeout)

    def list_runs(self, *, function_id: str | None = None, status: str | None = None,
                  limit: int = 100, before: str | None = None) -> list[Run]:
        """Runs, newest first. ``before`` (a run id, the last of the previous page) pages on."""
        return self.runtime.list_runs(function_id=function_id, status=status, limit=limit,
                                      before=before)

    def get_event(self, event_id: str) -> EventInfo:
        """An accepted event, the runs it started and why a matching function started none;
        :class:`~celery_steps.EventNotFound` once it expired (24 hours by default)."""
        return self.runtime.get_event(event_id)

    def cancel(self, run_id: str, *, reason: str = "cancelled by steps.cancel()") -> None:
        """Cancel a run in any state; it stops at its next step boundary. Ended runs stay."""
        self.runtime.cancel(run_id, reason=reason)

    def replay(self, run_id: str) -> str:
        """Start a new run of the same function on the same events; returns its id."""
        return self.runtime.replay(run_id)
