"""``CelerySteps``: installs durable functions into a Celery app and is the public API."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from celery import Celery

from celery_steps.clock import Clock
from celery_steps.engine.executor import Executor, RunScope
from celery_steps.engine.steps import StepTools, child_run_id, derived_id
from celery_steps.errors import ConfigurationError, InvalidEventError, RunNotFound
from celery_steps.events import (
    FUNCTION_FAILED,
    FUNCTION_INVOKED,
    Event,
    build_events,
    validate_event,
)
from celery_steps.functions import FlowControl, Function, Handler, Registry, build_function
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
from celery_steps.routing import new_run, route_event, run_id_for
from celery_steps.runs import Run
from celery_steps.settings import Settings, resolve_store_url
from celery_steps.store import open_store
from celery_steps.store.base import RESUME_SAFETY_MS, NewRun, Outcome, RunRecord, StateStore
from celery_steps.store.records import to_run

log = logging.getLogger("celery_steps")
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
        self.clock = clock or Clock()
        self.registry = Registry()
        self._store_url = store_url
        self._namespace = namespace
        self._settings: Settings | None = None
        self._store: StateStore | None = None
        self._store_pid = 0
        self._store_lock = threading.Lock()
        self._executor: Executor | None = None
        setattr(app, EXTENSION_ATTR, self)
        from celery_steps.integration import install

        install(self)

    @classmethod
    def from_app(cls, app: Celery) -> CelerySteps:
        """The extension installed on ``app``."""
        ext = getattr(app, EXTENSION_ATTR, None)
        if ext is None:
            raise ConfigurationError(
                "no CelerySteps on this Celery app: create one with steps = CelerySteps(app)"
            )
        return ext  # type: ignore[no-any-return]

    # -- configuration (lazy: the app may be configured after CelerySteps(app)) ----------
    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_conf(self.app.conf, namespace=self._namespace)
        return self._settings

    @property
    def store(self) -> StateStore:
        """This process's store client (re-created after fork)."""
        if self._store is None or self._store_pid != os.getpid():
            with self._store_lock:
                if self._store is None or self._store_pid != os.getpid():
                    url = resolve_store_url(self._store_url, self.app.conf)
                    shared = self._store is not None and url.startswith("memory://")
                    if not shared:
                        self._store = open_store(url, namespace=self.settings.namespace)
                        self._store.register_functions(list(self.registry.by_id))
                    self._store_pid = os.getpid()
        assert self._store is not None
        return self._store

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = Executor(lambda: self.store, self.clock, self.settings, self)
        return self._executor

    @property
    def functions(self) -> Mapping[str, Function]:
        """Registered functions by id (on_failure handlers included)."""
        return self.registry.by_id

    @property
    def event_ttl_ms(self) -> int:
        return int(float(self.settings.event_dedupe_window) * 1000)

    # -- declaring functions --------------------------------------------------------------
    def function(
        self,
        *,
        id: str,
        trigger: Trigger | Sequence[Trigger],
        retries: int = 4,
        on_failure: Handler | None = None,
        cancel_on: Sequence[CancelOn] | None = None,
        concurrency: Concurrency | None = None,
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
        flow = FlowControl(concurrency, throttle, rate_limit, debounce, priority, batch_events,
                           idempotency, singleton)

        def decorate(handler: Handler) -> Function:
            fn = build_function(
                self, handler, id=id, trigger=trigger, retries=retries, name=name, queue=queue,
                on_failure=on_failure, cancel_on=cancel_on, timeouts=timeouts, flow=flow,
            )
            if fn.id in self.registry.by_id or (
                fn.on_failure is not None and fn.on_failure.id in self.registry.by_id
            ):
                raise ConfigurationError(
                    f"function id {fn.id!r} is declared twice: ids must be unique per app"
                )
            from celery_steps.integration import register_function

            for item in (fn, fn.on_failure):
                if item is not None:
                    self.registry.add(item)
                    register_function(self, item)
                    if self._store is not None:
                        self._store.register_functions([item.id])
            return fn

        return decorate

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
        events = build_events(name_or_events, data, id=id, user=user, ts=ts)
        return self._accept(events)

    def _accept(self, events: list[Event], *, internal: bool = False) -> list[str]:
        now = self.clock.now_ms()
        encoded: list[tuple[Event, str]] = []
        for event in events:
            if "ts" not in event.model_fields_set or not event.ts:
                event = event.model_copy(update={"ts": now})  # "now" on the steps clock
            validate_event(event, max_bytes=int(self.settings.event_max_bytes),
                           max_depth=self.settings.json_max_depth, allow_internal=internal)
            encoded.append((event, _envelope(event, now)))
        ids = [event.id for event, _ in encoded]
        if len(set(ids)) != len(ids):
            raise InvalidEventError("the same event id appears twice in one send")
        sweep = int(float(self.settings.route_sweep_after) * 1000)
        for event, payload in encoded:
            delayed = event.ts > now + 1000
            route_at = event.ts if delayed else now + sweep
            if self.store.put_event(event.id, payload, route_at=route_at, ttl_ms=self.event_ttl_ms):
                if not delayed:
                    self._publish_route(event.id)
            else:
                log.info("event %s was already sent in the dedupe window; ignored", event.id)
        return ids

    def _publish_route(self, event_id: str) -> None:
        try:
            self.publish_route(event_id)
        except Exception:  # the routing timer routes it after steps_route_sweep_after
            log.warning("could not publish the routing of event %s; the sweep will route it",
                        event_id, exc_info=True)

    def publish_route(self, event_id: str, producer: Any = None) -> None:
        """Send the routing task of a stored event (raises if the broker refuses it)."""
        from celery_steps.integration import ROUTE_TASK

        self.app.tasks[ROUTE_TASK].apply_async(args=[event_id], producer=producer)

    def route(self, event_id: str) -> list[str]:
        """Route a stored event now (what the routing task does)."""
        return route_event(self, event_id)

    # -- runs -----------------------------------------------------------------------------
    def create_and_enqueue(self, fn: Function, run_id: str, events: list[dict[str, Any]],
                           parent: dict[str, Any] | None = None, start_in_ms: int = 0,
                           pending: str | None = None) -> None:
        """Create a run and send its start; a delayed start (throttle, debounce, batch) waits
        on its timer instead."""
        run = new_run(self, fn, run_id, events, parent, start_in_ms, pending)
        if not self.store.create_run(run):
            return  # routed before: started then, or its start watchdog starts it
        if start_in_ms > 0:
            return
        try:
            self.enqueue(fn.id, run_id)
        except Exception:  # the run's start watchdog (steps_start_watchdog) starts it later
            log.warning("could not publish the start of run %s; the watchdog will start it",
                        run_id, exc_info=True)

    def enqueue(self, function_id: str, run_id: str, producer: Any = None) -> None:
        """Send the task that executes (or resumes) a run, with no ETA."""
        fn = self.registry.by_id.get(function_id)
        name = fn.task_name if fn else f"celery_steps.fn.{function_id}"
        task = self.app.tasks.get(name)
        if task is not None:
            task.apply_async(args=[run_id], producer=producer)
        else:
            self.app.send_task(name, args=[run_id], producer=producer)

    def execute(self, function_id: str, run_id: str, *, branch: str | None = None) -> str:
        fn = self.registry.by_id.get(function_id)
        if fn is None:
            log.error("no function %r in this process; run %s not executed", function_id, run_id)
            return "unknown function"
        return self.executor.execute(fn, run_id, branch=branch)

    def start_run(self, fn: Function, *, data: Mapping[str, Any] | None = None,
                  user: Mapping[str, Any] | None = None, parent: dict[str, Any] | None = None,
                  run_id: str | None = None) -> str:
        """Start a run of ``fn`` directly (``fn.invoke``); returns the run id."""
        event = Event(name=FUNCTION_INVOKED, data=dict(data or {}),
                      user=dict(user) if user is not None else None,
                      id=f"invoke-{run_id}" if run_id else Event(name="x").id,
                      ts=self.clock.now_ms())
        validate_event(event, max_bytes=int(self.settings.event_max_bytes),
                       max_depth=self.settings.json_max_depth, allow_internal=True)
        run_id = run_id or run_id_for(fn.id, event.id)
        self.create_and_enqueue(fn, run_id, [event.model_dump()], parent)
        return run_id

    def function_for(self, function: Function | str) -> Function:
        if isinstance(function, Function):
            return function
        fn = self.registry.by_id.get(function) if isinstance(function, str) else None
        if fn is None:
            known = ", ".join(sorted(self.registry.by_id)) or "none"
            raise ConfigurationError(
                f"unknown function {function!r}: pass a Function object or the id of a function "
                f"registered on this app (known: {known})"
            )
        return fn

    def get_run(self, run_id: str) -> Run:
        record = self.store.load_run(run_id) if isinstance(run_id, str) and run_id else None
        if record is None:
            raise RunNotFound(str(run_id))
        return to_run(record)

    def runs_for_event(self, event_id: str, *, timeout: float = 10.0) -> list[Run]:
        """Wait up to ``timeout`` seconds for the event to be routed; the runs it started."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            run_ids = self.store.routed_runs(event_id)
            if run_ids is not None:
                return [to_run(r) for r in map(self.store.load_run, run_ids) if r is not None]
            if time.monotonic() >= deadline:
                return []
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def wait_for_run(self, run_id: str, *, timeout: float = 30.0) -> Run:
        """Return the run once it has ended; TimeoutError if it has not within ``timeout``."""
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            run = self.get_run(run_id)
            if run.ended:
                return run
            if time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} has not ended after {timeout}s ({run.status})")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def list_runs(self, *, function_id: str | None = None, status: str | None = None,
                  limit: int = 100) -> list[Run]:
        """Runs, newest first."""
        records = self.store.list_runs(function_id=function_id, status=status, limit=limit)
        return [to_run(r) for r in records]

    def cancel(self, run_id: str, *, reason: str = "cancelled by steps.cancel()") -> None:
        """Cancel a run in any state; it stops at its next step boundary. Ended runs stay."""
        retention = int(float(self.settings.run_retention) * 1000)
        previous = self.store.cancel(run_id, now=self.clock.now_ms(), reason=reason,
                                     retention_ms=retention)
        if previous is None:
            raise RunNotFound(run_id)
        if previous not in ("completed", "failed", "cancelled"):
            record = self.store.load_run(run_id)
            fn = self.registry.by_id.get(record.function_id) if record else None
            if record is not None and fn is not None:
                self.on_run_ended(fn, record, Outcome("cancelled", self.clock.now_ms(), None,
                                                      record.error))

    def replay(self, run_id: str) -> str:
        """Start a new run of the same function on the same events; returns its id."""
        record = self.store.load_run(run_id)
        if record is None:
            raise RunNotFound(run_id)
        fn = self.function_for(record.function_id)
        new_id = "run_" + derived_id(fn.id, run_id, "replay", Event(name="x").id)
        self.create_and_enqueue(fn, new_id, record.events)
        return new_id

    # -- services the engine calls (see engine.executor.Services) ---------------------------
    def send_step_events(self, events: Any, seed: str) -> list[str]:
        items = build_events(events)
        stable = [
            e if "id" in e.model_fields_set else e.model_copy(
                update={"id": "evt_" + derived_id(seed, str(i))})
            for i, e in enumerate(items)
        ]
        return self._accept(stable)

    def start_child(self, parent: RunRecord, function: Any, data: Any, step_key: str) -> str:
        child_id = child_run_id(parent.id, step_key)
        link = {"run_id": parent.id, "function_id": parent.function_id, "step_key": step_key}
        if isinstance(function, str) and function not in self.registry.by_id and (
            self.store.known_function(function)
        ):
            self._start_remote(function, data, link, child_id)  # served by another app
        else:
            self.start_run(self.function_for(function), data=data, parent=link, run_id=child_id)
        return child_id

    def _start_remote(self, function_id: str, data: Any, parent: dict[str, Any],
                      run_id: str) -> None:
        """Start a run of a function another app on the same store serves (by task name)."""
        now = self.clock.now_ms()
        event = Event(name=FUNCTION_INVOKED, data=dict(data or {}), id=f"invoke-{run_id}", ts=now)
        validate_event(event, max_bytes=int(self.settings.event_max_bytes),
                       max_depth=self.settings.json_max_depth, allow_internal=True)
        watchdog = now + int(float(self.settings.start_watchdog) * 1000)
        self.store.create_run(NewRun(id=run_id, function_id=function_id, event_ids=[event.id],
                                     created_at=now, events=[event.model_dump()], parent=parent,
                                     start_by=watchdog))
        self.enqueue(function_id, run_id)

    def send_task_step(self, run: RunRecord, task: Any, args: Any, kwargs: Any,
                       step_key: str) -> str:
        from celery_steps.integration import send_task_step

        return send_task_step(self, run, task, args, kwargs, step_key)

    def run_parallel(self, scope: RunScope, tools: StepTools,
                     callables: tuple[Callable[[], Any], ...]) -> tuple[Any, ...]:
        from celery_steps.integration.parallel import run_parallel

        return run_parallel(self, scope, tools, callables)

    def on_run_ended(self, function: Function, run: RunRecord, outcome: Outcome) -> None:
        """Notify a waiting parent and send ``celery_steps/function.failed`` on failure."""
        if run.parent:
            if outcome.status == "completed":
                update: dict[str, Any] = {"status": "completed", "result": run.output}
            else:
                update = {"status": "failed", "error": outcome.error or {
                    "name": "Cancelled", "message": f"invoked run {run.id} was cancelled"}}
            update["ended_at"] = outcome.ended_at
            parent = run.parent
            if self.store.resolve_step(parent["run_id"], parent["step_key"], update,
                                       wake_at=self.safety_wake_at()):
                self.enqueue(parent["function_id"], parent["run_id"])
        if outcome.status == "failed" and not function.internal:
            data = {"function_id": function.id, "run_id": run.id,
                    "error": outcome.error or {"name": "Error", "message": ""},
                    "event": run.events[0] if run.events else None}
            failed = Event(name=FUNCTION_FAILED, data=data, id=f"failed-{run.id}",
                           ts=self.clock.now_ms())
            try:
                self._accept([failed], internal=True)
            except Exception:
                log.exception("could not send %s for run %s", FUNCTION_FAILED, run.id)

    def safety_wake_at(self) -> int:
        """When a run resumed by a direct enqueue is woken by its timer if that was lost."""
        return self.clock.now_ms() + RESUME_SAFETY_MS

    # -- crons and task steps ---------------------------------------------------------------
    def start_cron_run(self, fn: Function, event: Event) -> str | None:
        """Start the run of one cron tick; None when the tick already started one."""
        now = self.clock.now_ms()
        payload = _envelope(event, now)
        if not self.store.put_event(event.id, payload, route_at=now + 60_000,
                                    ttl_ms=self.event_ttl_ms):
            return None
        run_id = run_id_for(fn.id, event.id)
        self.create_and_enqueue(fn, run_id, [event.model_dump()])
        self.store.complete_routing(event.id, [run_id], ttl_ms=self.event_ttl_ms)
        return run_id

    def resolve_task_step(self, run_id: str, function_id: str, step_key: str,
                          update: dict[str, Any]) -> None:
        """A Celery task awaited by ``ctx.step.run_task`` ended: store it and resume the run."""
        update = {**update, "ended_at": self.clock.now_ms()}
        if self.store.resolve_step(run_id, step_key, update, wake_at=self.safety_wake_at()):
            self.enqueue(function_id, run_id)


def _envelope(event: Event, received_at: int) -> str:
    """What the store keeps per accepted event: the event and when it was received (waits
    match only events received after they began)."""
    return json.dumps({"event": event.model_dump(), "received_at": received_at},
                      separators=(",", ":"))
