"""Execute one run: hold it, replay the handler, record how it stopped.

See :mod:`celery_steps.engine` for the model, and :mod:`celery_steps.engine.liveness` for how
a held run stays held while its process lives, and is taken over (a crash counted) when it
dies. While it executes, the run's fields are on every log record of the engine
(:mod:`celery_steps.engine.runlog`) and, when tracing, its span is current
(:mod:`celery_steps.telemetry`). The execution that fails a run for good logs the error at
ERROR and raises :class:`~celery_steps.errors.RunFailedError`, so its Celery task fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from celery_steps.clock import Clock
from celery_steps.context import Context
from celery_steps.engine import runlog
from celery_steps.engine.interrupts import BranchDone, Planned, Stop, Suspend
from celery_steps.engine.liveness import Heartbeat
from celery_steps.engine.runlog import ReplayAwareLogger, RunLog
from celery_steps.engine.scope import RunScope, Services
from celery_steps.engine.serialization import round_trip
from celery_steps.engine.steps import StepTools
from celery_steps.errors import (
    CeleryStepsError,
    RetryAfterError,
    RunFailedError,
    StepError,
    WorkerLostError,
    error_dict,
)
from celery_steps.events import Event
from celery_steps.faults import crash_point
from celery_steps.functions import Function
from celery_steps.settings import Settings
from celery_steps.store.base import Outcome, RunRecord, StateStore, Suspension
from celery_steps.telemetry import ExecutionTrace, start_execution

log = logging.getLogger("celery_steps.executor")
user_log = logging.getLogger("celery_steps.run")


class Executor:
    """Runs handlers against the store. Stateless between runs; safe to share in a process."""

    def __init__(self, store_of: Callable[[], StateStore], clock: Clock, settings: Settings,
                 services: Services) -> None:
        self._store_of = store_of
        self._clock = clock
        self._settings = settings
        self._services = services
        self._lease_ms = int(float(settings.lease_ttl) * 1000)
        self.heartbeat = Heartbeat(store_of, clock, self._lease_ms)
        runlog.install_filter()

    def execute(self, function: Function, run_id: str, *, branch: str | None = None) -> str:
        """Execute (or resume) a run. Returns what happened, for logs and tests.

        Raises :class:`RunFailedError` when this execution ended the run as failed (after
        storing and notifying the end).
        """
        fields = RunLog(run_id, function.id)
        token = runlog.current.set(fields)
        try:
            return self._execute(function, run_id, branch, fields)
        finally:
            runlog.current.reset(token)

    def _execute(self, function: Function, run_id: str, branch: str | None,
                 fields: RunLog) -> str:
        store = self._store_of()
        holder = self.heartbeat.new_holder()
        if branch is not None:
            return self._execute_branch(function, run_id, branch, holder, fields)
        status, run = store.acquire(run_id, holder, function_id=function.id,
                                    now=self._clock.now_ms(), lease_ms=self._lease_ms)
        if status == "foreign":
            log.error("a message for function %r named run %s, which belongs to another "
                      "function: refused, nothing changed", function.id, run_id)
            return status
        if status == "ended" and run is not None:  # its end's notifications are pending
            self._services.notify_end(function, run, _outcome_of(run))
            return "ended"
        if status != "ok" or run is None:
            log.debug("run %s not executed: %s", run_id, status)
            return status
        fields.attempt = run.attempt
        self.heartbeat.hold(run_id, holder, f"r|{function.id}|{run_id}")
        trace = start_execution(function.id, run_id, run.attempt, _trace_of(run))
        result, error = "error", None
        try:
            if run.crashes > function.retries:
                lost = WorkerLostError(_lost_message(run.crashes))
                result = self._end(function, run, holder, "failed", error=error_dict(lost),
                                   cause=lost)
                return result
            overdue = self._overdue(function, run)
            if overdue:
                self._services.cancel(run_id, reason=overdue)
                result = "cancelled"
                return result
            while True:
                result = self._replay(function, run, holder, trace=trace, fields=fields)
                if result != "rerun":
                    return result
                fresh = store.load_run(run_id)
                if fresh is None:
                    result = "missing"
                    return result
                run = fresh
        except RunFailedError as exc:  # ended for good: nothing to let go of
            result, error = "failed", exc.__cause__ or exc
            raise
        except Exception as exc:  # the store failed, or a bug: let go, the watchdog retries
            error = exc
            self.heartbeat.drop(run_id)
            self.heartbeat.release(run_id, holder)
            raise
        except BaseException as exc:
            # SystemExit, KeyboardInterrupt...: this process is being terminated (a Celery
            # hard time limit sends SIGTERM first) mid-execution. Keep holding the run, so
            # that whoever takes it over once the process is gone counts the lost attempt.
            result = f"terminated: {type(exc).__name__}"
            raise
        finally:
            self.heartbeat.drop(run_id)
            if trace is not None:
                trace.end(result, error)

    def _execute_branch(self, function: Function, run_id: str, branch: str, holder: str,
                        fields: RunLog) -> str:
        """Run one ``parallel`` branch, held so that a re-sent copy cannot run beside it."""
        store = self._store_of()
        status, run, crashes = store.acquire_branch(run_id, branch, holder,
                                                    function_id=function.id)
        if status == "foreign":
            log.error("a branch message for function %r named run %s, which belongs to "
                      "another function: refused, nothing changed", function.id, run_id)
        if status != "ok" or run is None:
            return status
        trace = start_execution(function.id, run_id, run.attempt, _trace_of(run))
        outcome, error = "error", None
        try:
            run.crashes = crashes
            fields.attempt = run.attempt
            outcome = self._replay(function, run, holder, branch=branch, trace=trace,
                                   fields=fields)
        except Exception as exc:
            error = exc
            store.release_branch(run_id, branch, holder)
            raise
        finally:  # (a BaseException keeps the branch held: see execute)
            if trace is not None:
                trace.end(outcome, error)
        store.release_branch(run_id, branch, holder)
        return outcome

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

    def _replay(self, function: Function, run: RunRecord, holder: str,
                branch: str | None = None, *, trace: ExecutionTrace | None = None,
                fields: RunLog) -> str:
        store = self._store_of()
        scope = RunScope(store, self._clock, self._settings, function, run, holder,
                         self._services, branch=branch, crashes=run.crashes,
                         state_bytes=run.state_bytes, trace=trace,
                         running=self.heartbeat.running if branch is None else None)
        tools = StepTools(scope)
        fields.steps = tools
        # (a stored event without a trace context has none: not the one current here)
        events = [Event.model_validate({"traceparent": None, **e}) for e in run.events] or [
            Event(name="unknown")]
        ctx = Context(events[0], events, tools, run.id, function.id,
                      ReplayAwareLogger(user_log, fields))
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
            rerun = store.suspend(run.id, holder, suspension)
            crash_point("run.after_suspend", function.id)
            return "rerun" if rerun else ("suspended" if rerun is False else "stopped")
        except (Stop, BranchDone, Planned) as interrupt:
            if branch is None:
                store.release(run.id, holder)
            return f"stopped: {interrupt}"
        except StepError as exc:  # the step's own error (and traceback) is the run's
            return self._end(function, run, holder, "failed", cause=exc,
                             error=_step_failure(run, exc))
        except RetryAfterError as exc:  # the handler's own code asks for a later attempt
            return self._retry_handler(function, scope, exc)
        except CeleryStepsError as exc:  # NonRetriable, Serialization, NonDeterminism, ...
            return self._end(function, run, holder, "failed", error=error_dict(exc), cause=exc)
        except Exception as exc:
            return self._retry_handler(function, scope, exc)
        if branch is not None:
            return "branch-finished"
        return self._end(function, run, holder, "completed", encoded=encoded, output=output)

    def _retry_handler(self, function: Function, scope: RunScope, exc: Exception) -> str:
        run = scope.run
        if run.attempt >= function.retries:
            return self._end(function, run, scope.holder, "failed", error=error_dict(exc),
                             cause=exc)
        log.info("run %s of %s raised %s (attempt %d), retrying",
                 run.id, function.id, type(exc).__name__, run.attempt + 1)
        wake_at = self._clock.now_ms() + scope.retry_delay_ms(run.attempt, exc)
        suspension = Suspension("queued", wake_at, attempt=run.attempt + 1)
        rerun = scope.store.suspend(run.id, scope.holder, suspension)
        return "rerun" if rerun else "retry-scheduled"

    def _end(self, function: Function, run: RunRecord, holder: str, status: str, *,
             encoded: str | None = None, output: Any = None,
             error: dict[str, str] | None = None, cause: BaseException | None = None) -> str:
        """Store the run's end and notify what follows; a run failed for good is logged at
        ERROR and raises :class:`RunFailedError` (from ``cause``)."""
        outcome = Outcome(status, self._clock.now_ms(), encoded, error)  # type: ignore[arg-type]
        retention = int(float(self._settings.run_retention) * 1000)
        if not self._store_of().finish(run.id, holder, outcome, retention_ms=retention):
            return "stopped: lease lost or cancelled"
        run.status, run.output, run.error, run.ended_at = status, output, error, outcome.ended_at
        if status == "failed" and error is not None:
            _log_failure(function, run, error, cause)
        crash_point("run.after_finish", function.id)
        self._services.notify_end(function, run, outcome)
        if status == "failed":
            raise RunFailedError(run.id, function.id, error or {}) from cause
        return status


def _trace_of(run: RunRecord) -> str | None:
    """The run's trace context: stored at its creation, else its first event's."""
    if run.trace:
        return run.trace
    first = run.events[0].get("traceparent") if run.events else None
    return first if isinstance(first, str) else None


def _step_failure(run: RunRecord, exc: StepError) -> dict[str, str]:
    """A run failed by a step: the step's error, with the traceback stored with the step."""
    error = {"name": exc.name, "message": exc.message}
    stored = (run.steps.get(exc.step_id) or {}).get("error") or {}
    if stored.get("traceback"):
        error["traceback"] = stored["traceback"]
    return error


def _log_failure(function: Function, run: RunRecord, error: dict[str, str],
                 cause: BaseException | None) -> None:
    """One ERROR record per run failed for good, with the traceback of what failed it."""
    exc_info = cause if cause is not None and cause.__traceback__ is not None else None
    # a step that failed in an earlier execution: its traceback is the stored one
    chained = exc_info is not None and (
        not isinstance(cause, StepError) or cause.__context__ is not None)
    stored = "" if chained or not error.get("traceback") else (
        "\nthe step's traceback:\n" + error["traceback"].rstrip())
    log.error("run %s of %s failed for good: %s: %s%s", run.id, function.id,
              error.get("name", "Error"), error.get("message", ""), stored, exc_info=exc_info)


def _outcome_of(run: RunRecord) -> Outcome:
    """How an ended run ended, from its record (to redo its notifications)."""
    return Outcome(run.status, run.ended_at or run.created_at, None, run.error)  # type: ignore[arg-type]


def _lost_message(crashes: int) -> str:
    return (f"the worker process executing this run died {crashes} times in a row (killed, "
            "out of memory, a hard time limit or os._exit) and it is not retried further")
