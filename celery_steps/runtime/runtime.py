"""The runtime: the run lifecycle plus routing, execution and what the engine asks for.

It depends on the store, the clock, the settings, the registry and the transport port only;
the public facade (:class:`~celery_steps.CelerySteps`) sits on top of it and the Celery glue
implements its port. Its :class:`~celery_steps.engine.scope.Services` methods are how a
running handler sends events, starts children, sends Celery tasks and parallel branches.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from celery_steps.clock import ms_to_datetime
from celery_steps.engine.executor import Executor
from celery_steps.engine.serialization import round_trip
from celery_steps.engine.steps import child_run_id, derived_id, task_run_id
from celery_steps.errors import (
    EventNotFound,
    RunFailedError,
    RunNotFound,
    SerializationError,
    error_dict,
)
from celery_steps.events import Event, build_events
from celery_steps.faults import crash_point
from celery_steps.functions import Function
from celery_steps.runs import EventInfo, Run, SkippedStart
from celery_steps.runtime.lifecycle import Lifecycle
from celery_steps.runtime.routing import route_event
from celery_steps.store.base import FINAL, RunRecord
from celery_steps.store.records import to_run

log = logging.getLogger("celery_steps")
# wait_for_run looks again at least this often (a clock jump, a store outage)
WAIT_SLICE_S = 5.0
# A task resuming several runs (or routing several events) hands those it has not begun
# back to the timer pollers once it has been at it this long, so that a slow one does not
# hold the others up while other pool processes could take them.
BATCH_BUDGET_S = 0.25


class Runtime(Lifecycle):
    """Everything below the public API: see :mod:`celery_steps.runtime`."""

    _executor: Executor | None = None

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = Executor(self.store_of, self.clock, self.settings, self)
        return self._executor

    # -- what the Celery tasks call -------------------------------------------------------
    def route(self, event_id: str) -> list[str]:
        """Route a stored event now (what the routing task does)."""
        return route_event(self, event_id)

    def execute(self, function_id: str, run_id: str, *, branch: str | None = None) -> str:
        """Execute (or resume) a run; returns what happened, for logs and tests."""
        fn = self.registry.by_id.get(function_id)
        if fn is None:
            log.error("no function %r in this process; run %s not executed", function_id, run_id)
            return "unknown function"
        return self.executor.execute(fn, run_id, branch=branch)

    def execute_many(self, function_id: str, run_ids: Sequence[str]) -> list[str]:
        """Execute (or resume) several runs of one function, one after the other, each held
        with its own holder as :meth:`execute` does: one's failure does not stop the others.
        Those not begun within :data:`BATCH_BUDGET_S` are handed back to their timers, due
        now. Raises the first :class:`RunFailedError` once every run was seen to."""
        outcomes: list[str] = []
        failed: RunFailedError | None = None
        began = time.monotonic()
        for index, run_id in enumerate(run_ids):
            if index and time.monotonic() - began > BATCH_BUDGET_S:
                self.hand_back([f"r|{function_id}|{r}" for r in run_ids[index:]])
                break
            try:
                outcomes.append(self.execute(function_id, run_id))
            except RunFailedError as exc:  # logged at ERROR by the executor
                failed = failed or exc
                outcomes.append("failed")
            except Exception:  # let go of (the executor released it): its timer retries
                log.exception("run %s of %s could not be executed", run_id, function_id)
                outcomes.append("error")
        if failed is not None:
            raise failed
        return outcomes

    def route_many(self, event_ids: Sequence[str]) -> None:
        """Route several stored events, one after the other (see :meth:`execute_many`);
        raises the first error once every event was seen to."""
        error: Exception | None = None
        began = time.monotonic()
        for index, event_id in enumerate(event_ids):
            if index and time.monotonic() - began > BATCH_BUDGET_S:
                self.hand_back([f"e|{e}" for e in event_ids[index:]])
                break
            try:
                self.route(event_id)
            except Exception as exc:  # its routing timer routes it again
                log.exception("event %s could not be routed", event_id)
                error = error or exc
        if error is not None:
            raise error

    def hand_back(self, members: list[str]) -> None:
        """Arm these timers due now: the next poller to claim them sends them again."""
        now = self.clock.now_ms()
        for member in members:
            self.store.schedule(member, now)

    # -- services the engine calls (engine.scope.Services) ----------------------------------
    def send_step_events(self, events: Any, seed: str) -> list[str]:
        items = build_events(events)
        stable = [
            e if "id" in e.model_fields_set else e.model_copy(
                update={"id": "evt_" + derived_id(seed, str(i))})
            for i, e in enumerate(items)
        ]
        return self.accept(stable)

    def start_child(self, parent: RunRecord, function: Any, data: Any, step_key: str) -> str:
        child_id = child_run_id(parent.id, step_key)
        link = {"run_id": parent.id, "function_id": parent.function_id, "step_key": step_key}
        if isinstance(function, str) and function not in self.registry.by_id and (
            self.store.known_function(function)
        ):
            self.create_remote(function, data, link, child_id)  # served by another app
        else:
            self.start_run(self.function_for(function), data=data, parent=link, run_id=child_id)
        return child_id

    def send_task_step(self, run: RunRecord, task: Any, args: Any, kwargs: Any,
                       step_key: str) -> str:
        task_id = task_run_id(run.id, step_key)
        self.transport.send_task(task, list(args), dict(kwargs), task_id=task_id,
                                 reply_to=(run.id, run.function_id, step_key))
        return task_id

    def send_branch(self, function_id: str, run_id: str, step_key: str) -> None:
        self.transport.send_branch(function_id, run_id, step_key)

    def task_outcome(self, task_id: str) -> dict[str, Any] | None:
        """What is known of a ``run_task`` Celery task: how it ended (as the worker that ran
        it recorded, else as the result backend has it), else that it started, with whether
        the process that started it is still alive (``alive``); None when nothing is."""
        seen = self.store.task_outcome(task_id)
        if seen is not None and seen["status"] in FINAL:
            return seen
        result = self.transport.task_result(task_id)
        if result is not None:
            return result
        if seen is None:
            return None
        if seen["status"] != "started":  # lost: sent again, like a task never seen
            return {**seen, "alive": False}
        proc = seen.get("proc")
        return {"status": "started", "alive": proc is None or self.store.proc_alive(proc)}

    def task_started(self, task_id: str) -> None:
        """A worker started a ``run_task`` task here (so it is not sent again while this
        process lives)."""
        self.store.note_task(task_id, {"status": "started",
                                       "proc": self.executor.heartbeat.process()},
                             ttl_ms=self._task_mark_ms())

    def task_ended(self, task_id: str, outcome: dict[str, Any]) -> None:
        """A ``run_task`` task ended here: its outcome is kept in the store, where the step's
        safety check finds it if the message reporting it (``task_done``) is lost. A
        ``lost`` outcome (Celery failed it for the broker) has the step send it again."""
        if outcome["status"] == "completed":
            try:
                result, _ = round_trip(outcome["result"], what=f"the result of task {task_id}",
                                       max_depth=self.settings.json_max_depth)
                outcome = {**outcome, "result": result}
            except SerializationError as exc:  # the step fails with this, not a hang
                outcome = {"status": "failed", "error": error_dict(exc)}
        self.store.note_task(task_id, outcome, ttl_ms=self._task_mark_ms())

    def _task_mark_ms(self) -> int:
        return int(float(self.settings.run_retention) * 1000)

    # -- crons ------------------------------------------------------------------------------
    def start_cron_run(self, fn: Function, event: Event) -> str | None:
        """Start the run of one cron tick; None when the tick was seen before. The tick is an
        event like any other, routed here at once; if this process dies after storing it,
        its routing timer routes it later, so a tick is never lost."""
        if not self._store_event(event, event.to_json(), self.clock.now_ms()):
            return None
        crash_point("cron.after_put_event", fn.id)
        started = self.route(event.id)
        return started[0] if started else None

    # -- runs -------------------------------------------------------------------------------
    def replay(self, run_id: str) -> str:
        """Start a new run of the same function on the same events; returns its id."""
        record = self.store.load_run(run_id)
        if record is None:
            raise RunNotFound(run_id)
        fn = self.function_for(record.function_id)
        new_id = "run_" + derived_id(fn.id, run_id, "replay", Event(name="x").id)
        self.create_and_enqueue(fn, new_id, record.events)
        return new_id

    def get_run(self, run_id: str) -> Run:
        record = self.store.load_run(run_id) if isinstance(run_id, str) and run_id else None
        if record is None:
            raise RunNotFound(str(run_id))
        return to_run(record)

    def runs_for_event(self, event_id: str, *, timeout: float) -> list[Run]:
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

    def wait_for_run(self, run_id: str, *, timeout: float) -> Run:
        """Return the run once it has ended; TimeoutError if it has not within ``timeout``.
        Blocks until the store says the run ended (no polling)."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.get_run(run_id)
            if run.ended:
                return run
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"run {run_id} has not ended after {timeout}s ({run.status})")
            self.store.wait_ended(run_id, min(left, WAIT_SLICE_S))

    def list_runs(self, *, function_id: str | None, status: str | None, limit: int,
                  before: str | None = None) -> list[Run]:
        """Runs, newest first; ``before`` (a run id) pages past that run."""
        cursor = None
        if before is not None:
            last = self.store.load_run(before)
            if last is None:
                raise RunNotFound(before)
            cursor = (last.created_at, last.id)
        records = self.store.list_runs(function_id=function_id, status=status, limit=limit,
                                       before=cursor)
        return [to_run(r) for r in records]

    def get_event(self, event_id: str) -> EventInfo:
        """An accepted event and what routing did with it."""
        raw = self.store.get_event(event_id) if isinstance(event_id, str) and event_id else None
        if raw is None:
            raise EventNotFound(str(event_id))
        envelope = json.loads(raw)
        run_ids = self.store.routed_runs(event_id)
        received = ms_to_datetime(int(envelope["received_at"]))
        assert received is not None
        skipped = [SkippedStart(function_id=s.function_id, reason=s.reason, run_id=s.run_id)
                   for s in self.store.skipped_starts(event_id)] if run_ids is not None else []
        return EventInfo(event=Event.model_validate(envelope["event"]), received_at=received,
                         routed=run_ids is not None, run_ids=run_ids or [], skipped=skipped)
