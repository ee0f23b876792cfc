"""Execute one run: take the lease, replay the handler, record how it stopped."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from celery_steps.clock import Clock
from celery_steps.context import Context, ReplayAwareLogger
from celery_steps.engine.backoff import backoff_seconds
from celery_steps.engine.interrupts import BranchDone, Planned, Stop, Suspend
from celery_steps.engine.serialization import round_trip
from celery_steps.engine.steps import StepTools
from celery_steps.errors import (
    CeleryStepsError,
    NonRetriableError,
    RetryAfterError,
    SerializationError,
    StepError,
    error_dict,
)
from celery_steps.events import Event
from celery_steps.store.base import (
    RESUME_SAFETY_MS,
    Outcome,
    RunRecord,
    StateStore,
    Suspension,
)

if TYPE_CHECKING:
    from celery_steps.functions import Function
    from celery_steps.settings import Settings

log = logging.getLogger("celery_steps.executor")
user_log = logging.getLogger("celery_steps.run")


class Services(Protocol):
    """What the engine needs from the Celery glue (implemented by CelerySteps)."""

    def send_step_events(self, events: Any, seed: str) -> list[str]: ...
    def start_child(self, parent: RunRecord, function: Any, data: Any, step_key: str) -> str: ...
    def send_task_step(self, run: RunRecord, task: Any, args: Any, kwargs: Any,
                       step_key: str) -> str: ...
    def run_parallel(self, scope: RunScope, tools: StepTools,
                     callables: tuple[Callable[[], Any], ...]) -> tuple[Any, ...]: ...
    def on_run_ended(self, function: Function, run: RunRecord, outcome: Outcome) -> None: ...
    def enqueue(self, function_id: str, run_id: str) -> None: ...
    def cancel(self, run_id: str, *, reason: str = ...) -> None: ...


@dataclass
class RunScope:
    """Everything one execution of a handler works with."""

    store: StateStore
    clock: Clock
    settings: Settings
    function: Function
    run: RunRecord
    token: str
    services: Services
    planning: bool = False
    branch: str | None = None
    fatal: CeleryStepsError | None = None

    def retry_delay_ms(self, attempts: int, exc: BaseException) -> int:
        if isinstance(exc, RetryAfterError):
            seconds = exc.delay_seconds(self.clock.now())
        else:
            seconds = backoff_seconds(
                attempts,
                base=float(self.settings.retry_backoff_base),
                cap=float(self.settings.retry_backoff_max),
            )
        return int(seconds * 1000)

    def send_events(self, events: Any, seed: str) -> list[str]:
        return self.services.send_step_events(events, seed)

    def start_child(self, function: Any, data: Any, step_key: str) -> str:
        return self.services.start_child(self.run, function, data, step_key)

    def child_outcome(self, child_id: str) -> dict[str, Any] | None:
        child = self.store.load_run(child_id)
        if child is None:
            return {"status": "failed", "error": {
                "name": "RunNotFound", "message": f"invoked run {child_id} no longer exists"}}
        if child.status == "completed":
            return {"status": "completed", "result": child.output}
        if child.status in ("failed", "cancelled"):
            return {"status": "failed", "error": child.error or {
                "name": "Cancelled", "message": f"invoked run {child_id} was {child.status}"}}
        return None

    def save_branch(self, key: str, state: dict[str, Any]) -> dict[str, Any]:
        """A parallel branch has no lease: write first-writer-wins and wake the parent."""
        store = self.store
        wake_at = self.clock.now_ms() + RESUME_SAFETY_MS  # the parent is also enqueued below
        if not store.resolve_step(self.run.id, key, state, wake_at=wake_at):
            fresh = store.load_run(self.run.id)
            if fresh is None or key not in fresh.steps:
                raise Stop("run gone")
            state = fresh.steps[key]
        self.run.steps[key] = state
        self.services.enqueue(self.function.id, self.run.id)
        return state

    def send_task(self, task: Any, args: Any, kwargs: Any, step_key: str) -> str:
        return self.services.send_task_step(self.run, task, args, kwargs, step_key)

    def parallel(self, tools: StepTools, callables: tuple[Callable[[], Any], ...]) -> tuple[
        Any, ...
    ]:
        return self.services.run_parallel(self, tools, callables)


class LeaseKeeper:
    """One daemon thread per process renewing the leases of runs executing here."""

    def __init__(self, store_of: Callable[[], StateStore], clock: Clock, lease_ms: int) -> None:
        self._store_of, self._clock, self._lease_ms = store_of, clock, lease_ms
        self._active: dict[str, str] = {}
        self._lock = threading.Lock()
        self._pid = 0
        self._wake = threading.Event()

    def hold(self, run_id: str, token: str) -> None:
        with self._lock:
            self._active[run_id] = token
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._loop, name="celery-steps-lease", daemon=True).start()

    def drop(self, run_id: str) -> None:
        with self._lock:
            self._active.pop(run_id, None)

    def _loop(self) -> None:
        while True:
            self._wake.wait(self._lease_ms / 3000)
            with self._lock:
                active = list(self._active.items())
            for run_id, token in active:
                try:
                    self._store_of().renew(run_id, token, now=self._clock.now_ms(),
                                           lease_ms=self._lease_ms)
                except Exception:  # the next round tries again; the watchdog covers the rest
                    log.warning("could not renew the lease of run %s", run_id, exc_info=True)


NOT_RETRIED = (NonRetriableError, SerializationError, StepError, CeleryStepsError)


class Executor:
    """Runs handlers against the store. Stateless between runs; safe to share in a process."""

    def __init__(self, store_of: Callable[[], StateStore], clock: Clock, settings: Settings,
                 services: Services) -> None:
        self._store_of = store_of
        self._clock = clock
        self._settings = settings
        self._services = services
        self._lease_ms = int(float(settings.lease_ttl) * 1000)
        self._keeper = LeaseKeeper(store_of, clock, self._lease_ms)

    def execute(self, function: Function, run_id: str, *, branch: str | None = None) -> str:
        """Execute (or resume) a run. Returns what happened, for logs and tests."""
        store = self._store_of()
        token = uuid.uuid4().hex
        if branch is not None:
            run = store.load_run(run_id)
            if run is None or run.ended:
                return "missing" if run is None else "ended"
            return self._replay(function, run, token, branch=branch)
        status, run = store.acquire(run_id, token, now=self._clock.now_ms(),
                                    lease_ms=self._lease_ms)
        if status != "ok" or run is None:
            log.debug("run %s not executed: %s", run_id, status)
            return status
        self._keeper.hold(run_id, token)
        try:
            overdue = self._overdue(function, run)
            if overdue:
                self._services.cancel(run_id, reason=overdue)
                return "cancelled"
            while True:
                result = self._replay(function, run, token)
                if result != "rerun":
                    return result
                fresh = store.load_run(run_id)
                if fresh is None:
                    return "missing"
                run = fresh
        except BaseException:
            store.release(run_id, token)
            raise
        finally:
            self._keeper.drop(run_id)

    def _overdue(self, function: Function, run: RunRecord) -> str | None:
        """Why the run must be cancelled now under its Timeouts, if it must."""
        now = self._clock.now_ms()
        start, finish = run.deadlines.get("start"), run.deadlines.get("finish")
        if start is not None and now > start and not run.steps and run.attempt == 0:
            return (f"run of {function.id!r} did not start within timeouts.start="
                    f"{function.timeouts.start if function.timeouts else '?'}")
        if finish is not None and now >= finish:
            return (f"run of {function.id!r} did not finish within timeouts.finish="
                    f"{function.timeouts.finish if function.timeouts else '?'}")
        return None

    def _replay(self, function: Function, run: RunRecord, token: str,
                branch: str | None = None) -> str:
        store = self._store_of()
        scope = RunScope(store, self._clock, self._settings, function, run, token,
                         self._services, branch=branch)
        tools = StepTools(scope)
        events = [Event.model_validate(e) for e in run.events] or [Event(name="unknown")]
        ctx = Context(events[0], events, tools, run.id, function.id,
                      ReplayAwareLogger(user_log, tools, run.id))
        try:
            value = function.handler(ctx)
            if scope.fatal is not None:
                raise scope.fatal
            output, encoded = round_trip(value, what=f"the output of function {function.id!r}",
                                         max_depth=self._settings.json_max_depth)
        except Suspend as interrupt:
            if branch is not None:
                suspension = interrupt.suspension
                if suspension.step_key == branch and suspension.step_state is not None:
                    scope.save_branch(branch, suspension.step_state)  # a retry: parent decides
                return "branch-suspended"
            suspension = interrupt.suspension
            finish = run.deadlines.get("finish")
            if finish is not None and (suspension.wake_at is None or suspension.wake_at > finish):
                suspension = replace(suspension, wake_at=finish)
            rerun = store.suspend(run.id, token, suspension)
            return "rerun" if rerun else ("suspended" if rerun is False else "stopped")
        except (Stop, BranchDone, Planned) as interrupt:
            if branch is None:
                store.release(run.id, token)
            return f"stopped: {interrupt}"
        except StepError as exc:
            return self._end(function, run, token, "failed", error={
                "name": exc.name, "message": exc.message})
        except NOT_RETRIED as exc:
            return self._end(function, run, token, "failed", error=error_dict(exc))
        except Exception as exc:
            return self._retry_handler(function, scope, exc)
        if branch is not None:
            return "branch-finished"
        return self._end(function, run, token, "completed", encoded=encoded, output=output)

    def _retry_handler(self, function: Function, scope: RunScope, exc: Exception) -> str:
        run = scope.run
        if run.attempt >= function.retries:
            log.warning("run %s of %s failed for good after %d attempts: %r",
                        run.id, function.id, run.attempt + 1, exc)
            return self._end(function, run, scope.token, "failed", error=error_dict(exc))
        log.info("run %s of %s raised %s (attempt %d), retrying",
                 run.id, function.id, type(exc).__name__, run.attempt + 1)
        wake_at = self._clock.now_ms() + scope.retry_delay_ms(run.attempt, exc)
        suspension = Suspension("queued", wake_at, attempt=run.attempt + 1)
        rerun = scope.store.suspend(run.id, scope.token, suspension)
        return "rerun" if rerun else "retry-scheduled"

    def _end(self, function: Function, run: RunRecord, token: str, status: str, *,
             encoded: str | None = None, output: Any = None,
             error: dict[str, str] | None = None) -> str:
        outcome = Outcome(status, self._clock.now_ms(), encoded, error)  # type: ignore[arg-type]
        retention = int(float(self._settings.run_retention) * 1000)
        if not self._store_of().finish(run.id, token, outcome, retention_ms=retention):
            return "stopped: lease lost or cancelled"
        run.status, run.output, run.error, run.ended_at = status, output, error, outcome.ended_at
        self._services.on_run_ended(function, run, outcome)
        return status
