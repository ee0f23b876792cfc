"""The run lifecycle below routing: accept events, create and enqueue runs, end and notify.

:class:`Lifecycle` owns the process's store client, the clock, the settings, the function
registry and the transport port. Routing and flow control work on it; the
:class:`~celery_steps.runtime.runtime.Runtime` adds routing, execution and the engine's
services on top.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from celery_steps.clock import Clock
from celery_steps.errors import ConfigurationError, InvalidEventError, RunNotFound
from celery_steps.events import (
    FUNCTION_CANCELLED,
    FUNCTION_FAILED,
    FUNCTION_FINISHED,
    FUNCTION_INVOKED,
    SYSTEM_EVENTS,
    Event,
    validate_event,
)
from celery_steps.faults import crash_point
from celery_steps.functions import Function, Registry
from celery_steps.runtime.gates import gate
from celery_steps.runtime.ports import Transport
from celery_steps.runtime.runs import new_run, run_id_for
from celery_steps.settings import Settings, resolve_store_url, store_transport_options
from celery_steps.store import open_store
from celery_steps.store.base import (
    RESUME_SAFETY_MS,
    EventWrite,
    NewRun,
    Outcome,
    RunRecord,
    StateStore,
)

log = logging.getLogger("celery_steps")


class Lifecycle:
    """Accept events, create, enqueue, cancel and end runs; notify what follows an end."""

    def __init__(self, conf: Mapping[str, Any], clock: Clock, registry: Registry,
                 transport: Transport, *, store_url: str | None = None,
                 namespace: str | None = None) -> None:
        self.conf = conf
        self.clock = clock
        self.registry = registry
        self.transport = transport
        self._store_url = store_url
        self._namespace = namespace
        self._settings: Settings | None = None
        self._store: StateStore | None = None
        self._store_pid = 0
        self._store_lock = threading.Lock()

    # -- infrastructure (lazy: the Celery app may be configured after CelerySteps(app)) ----
    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_conf(self.conf, namespace=self._namespace)
        return self._settings

    @property
    def store(self) -> StateStore:
        """This process's store client (re-created after fork)."""
        if self._store is None or self._store_pid != os.getpid():
            with self._store_lock:
                if self._store is None or self._store_pid != os.getpid():
                    url = resolve_store_url(self._store_url, self.conf)
                    shared = self._store is not None and url.startswith("memory://")
                    if not shared:
                        self._store = open_store(
                            url, namespace=self.settings.namespace, clock=self.clock,
                            options=store_transport_options(url, self.conf),
                            shards=self.settings.store_shards)
                        self._store.register_functions(list(self.registry.by_id))
                    self._store_pid = os.getpid()
        assert self._store is not None
        return self._store

    def store_of(self) -> StateStore:
        return self.store

    def register(self, fn: Function) -> None:
        """Add a declared function to the registry (and the store's function table)."""
        self.registry.add(fn)
        if self._store is not None:
            self._store.register_functions([fn.id])

    @property
    def event_ttl_ms(self) -> int:
        return int(float(self.settings.event_dedupe_window) * 1000)

    def safety_wake_at(self) -> int:
        """When a run resumed by a direct enqueue is woken by its timer if that was lost."""
        return self.clock.now_ms() + RESUME_SAFETY_MS

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

    # -- events -----------------------------------------------------------------------------
    def accept(self, events: list[Event], *, internal: bool = False) -> list[str]:
        """Validate and store events, then publish their routing; returns their ids."""
        now = self.clock.now_ms()
        encoded: list[tuple[Event, str]] = []
        for event in events:
            if "ts" not in event.model_fields_set or not event.ts:
                event = event.model_copy(update={"ts": now})  # "now" on the steps clock
            encoded.append((event, validate_event(
                event, max_bytes=int(self.settings.event_max_bytes),
                max_depth=self.settings.json_max_depth, allow_internal=internal)))
        ids = [event.id for event, _ in encoded]
        if len(set(ids)) != len(ids):
            raise InvalidEventError("the same event id appears twice in one send")
        publish = self.publishes()
        stored = self.store.put_events([self._event_write(event, payload, now, publish)
                                        for event, payload in encoded])
        for (event, _), fresh in zip(encoded, stored, strict=True):
            if not fresh:
                log.info("event %s was already sent in the dedupe window; ignored", event.id)
                continue
            crash_point("accept.after_put_event", event.name)
            if publish and event.ts <= now + 1000:
                self._publish_route(event.id)
        return ids

    def publishes(self) -> bool:
        """Whether this process publishes new routings and starts itself, rather than leave
        them to the workers' timer pollers (``steps_publish_from_client``; eager mode)."""
        return bool(self.settings.publish_from_client) or self.transport.inline()

    def _store_event(self, event: Event, payload: str, now: int) -> bool:
        [fresh] = self.store.put_events([self._event_write(event, payload, now, True)])
        return fresh

    def _event_write(self, event: Event, payload: str, now: int,
                     publish: bool) -> EventWrite:
        """An event with its routing timer: at ``ts`` for a delayed event (kept the dedupe
        window past it); now when the pollers publish its routing; else a sweep in case the
        routing message this process publishes is lost."""
        delay = max(0, event.ts - now) if event.ts > now + 1000 else 0
        if delay:
            route_at = now + delay
        elif publish:
            route_at = now + int(float(self.settings.route_sweep_after) * 1000)
        else:
            route_at = now
        return EventWrite(event.id, payload, route_at, self.event_ttl_ms + delay)

    def _publish_route(self, event_id: str) -> None:
        try:
            self.transport.publish_route(event_id)
        except Exception:  # the routing timer routes it after steps_route_sweep_after
            log.warning("could not publish the routing of event %s; the sweep will route it",
                        event_id, exc_info=True)

    # -- starting runs ------------------------------------------------------------------------
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

    def create_and_enqueue(self, fn: Function, run_id: str, events: list[dict[str, Any]],
                           parent: dict[str, Any] | None = None, start_in_ms: int = 0,
                           pending: str | None = None) -> bool:
        """Create a run and send its start; a delayed start (throttle, debounce, batch) waits
        on its timer instead. False when a run with this id existed (nothing sent)."""
        now = self.clock.now_ms()
        run = new_run(now, self.settings, fn, run_id, events, parent, start_in_ms, pending)
        # the timer pollers start it, unless this process publishes (or has a broker
        # priority to give the message)
        publish = self.publishes() or fn.flow.priority is not None
        if not publish and start_in_ms <= 0:
            run = replace(run, start_by=now)
        if not self.store.create_run(run):
            return False  # routed before: started then, or its start watchdog starts it
        if start_in_ms > 0 or not publish:
            return True
        try:
            if fn.flow.priority is not None:  # the broker's message priority, where it has one
                self.transport.enqueue_run(fn.id, run_id, priority=int(run.priority_ms / 1000))
            else:
                self.enqueue(fn.id, run_id)
        except Exception:  # the run's start watchdog (steps_start_watchdog) starts it later
            log.warning("could not publish the start of run %s; the watchdog will start it",
                        run_id, exc_info=True)
        return True

    def create_remote(self, function_id: str, data: Any, parent: dict[str, Any],
                      run_id: str) -> None:
        """Start a run of a function another app on the same store serves (by task name)."""
        now = self.clock.now_ms()
        event = Event(name=FUNCTION_INVOKED, data=dict(data or {}), id=f"invoke-{run_id}", ts=now)
        validate_event(event, max_bytes=int(self.settings.event_max_bytes),
                       max_depth=self.settings.json_max_depth, allow_internal=True)
        publish = self.publishes()
        watchdog = now + (int(float(self.settings.start_watchdog) * 1000) if publish else 0)
        self.store.create_run(NewRun(id=run_id, function_id=function_id, event_ids=[event.id],
                                     created_at=now, events=[event.model_dump()], parent=parent,
                                     start_by=watchdog))
        if publish:
            self.enqueue(function_id, run_id)

    def enqueue(self, function_id: str, run_id: str) -> None:
        """Send the task that executes (or resumes) a run, with no ETA."""
        self.transport.enqueue_run(function_id, run_id)

    # -- ending runs --------------------------------------------------------------------------
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
                outcome = Outcome("cancelled", record.ended_at or self.clock.now_ms(), None,
                                  record.error)
                self.notify_end(fn, record, outcome)

    def notify_end(self, function: Function, run: RunRecord, outcome: Outcome) -> None:
        """Do what follows a run's end, then clear its outbox. Every part is idempotent: if
        this process dies half way, the outbox timer has it done again."""
        self._notify_parent(run, outcome)
        self._send_system_events(function, run, outcome)
        singleton = function.flow.singleton
        if singleton is not None and run.events:  # the key may never be used again
            self.store.release_singleton(
                gate(self.settings.namespace, "single", function, singleton.key, run.events[0]),
                run.id)
        self.store.notified(run.id)

    def _notify_parent(self, run: RunRecord, outcome: Outcome) -> None:
        """Resolve the ``invoke`` step of the run that started this one, and resume it."""
        if run.parent:
            if outcome.status == "completed":
                update: dict[str, Any] = {"status": "completed", "result": run.output}
            else:
                update = {"status": "failed", "error": outcome.error or {
                    "name": "Cancelled", "message": f"invoked run {run.id} was cancelled"}}
            update["ended_at"] = outcome.ended_at
            parent = run.parent
            self.resolve_and_wake(parent["run_id"], parent["function_id"], parent["step_key"],
                                  update)

    def _send_system_events(self, function: Function, run: RunRecord, outcome: Outcome) -> None:
        """``function.finished`` for every end, plus ``function.failed`` or
        ``function.cancelled``; their ids derive from the run, so a redo sends nothing twice.
        Runs started by a system event send none (a function triggered by
        ``function.finished`` must not trigger itself forever)."""
        trigger = run.events[0] if run.events else None
        if function.internal or (trigger is not None and trigger.get("name") in SYSTEM_EVENTS):
            return
        data: dict[str, Any] = {"function_id": function.id, "run_id": run.id,
                                "status": outcome.status}
        if outcome.status == "completed":
            room = int(self.settings.event_max_bytes) // 2
            if len(json.dumps(run.output, separators=(",", ":"))) <= room:
                data["output"] = run.output
            else:  # read it with steps.get_run(run_id)
                data["output_omitted"] = True
        else:
            data["error"] = outcome.error or {"name": "Error", "message": ""}
        events = [Event(name=FUNCTION_FINISHED, data=data, id=f"finished-{run.id}")]
        if outcome.status == "failed":
            events.append(Event(name=FUNCTION_FAILED, id=f"failed-{run.id}", data={
                **data, "event": trigger}))
        elif outcome.status == "cancelled":
            events.append(Event(name=FUNCTION_CANCELLED, id=f"cancelled-{run.id}", data={
                **data, "event": trigger}))
        self.accept(events, internal=True)

    def resolve_and_wake(self, run_id: str, function_id: str, step_key: str,
                         update: dict[str, Any]) -> bool:
        """Resolve a suspended step from outside its run and resume the run; True if this
        call won (a step resolves once)."""
        if not self.store.resolve_step(run_id, step_key, update, wake_at=self.safety_wake_at()):
            return False
        self.enqueue(function_id, run_id)
        return True

    def resolve_task_step(self, run_id: str, function_id: str, step_key: str,
                          update: dict[str, Any]) -> None:
        """A Celery task awaited by ``ctx.step.run_task`` ended: store it and resume the run."""
        self.resolve_and_wake(run_id, function_id, step_key,
                              {**update, "ended_at": self.clock.now_ms()})
