"""``ctx.step``: the step tools. Each call is memoized by its key (step id + occurrence)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar

from celery_steps.durations import parse_duration, parse_when, to_ms
from celery_steps.engine.cursor import StepCursor, fatal
from celery_steps.engine.interrupts import Planned, Stop, Suspend
from celery_steps.engine.parallel import run_parallel
from celery_steps.engine.results import result_type
from celery_steps.engine.scope import RunScope
from celery_steps.engine.serialization import round_trip
from celery_steps.engine.waiters import build_waiter
from celery_steps.errors import (
    CeleryStepsError,
    ConfigurationError,
    NonRetriableError,
    RunLimitError,
    SerializationError,
    StepError,
    WorkerLostError,
    error_dict,
    step_error_for,
)
from celery_steps.events import Event
from celery_steps.expressions import Expression, match_to_expression
from celery_steps.faults import crash_point
from celery_steps.store.base import FINAL, Suspension, Waiter

T = TypeVar("T")
log = logging.getLogger("celery_steps.steps")


class StepTools:
    """The object behind ``ctx.step``. One per execution of a handler.

    Where the handler is in its steps is the engine's :class:`StepCursor`, held privately."""

    def __init__(self, scope: RunScope, cursor: StepCursor) -> None:
        self._scope = scope
        self._cursor = cursor
        # bound once: every step calls them
        self._claim = cursor.claim
        self._remember = scope.save_step

    @property
    def attempt(self) -> int:
        return self._cursor.attempt

    def _suspend(self, status: str, wake_at: int | None, key: str, state: dict[str, Any],
                 waiters: tuple[Waiter, ...] = ()) -> Suspend:
        self._scope.run.steps[key] = state
        return Suspend(Suspension(status, wake_at, key, state, None, waiters))  # type: ignore[arg-type]

    @staticmethod
    def _replayed(key: str, state: dict[str, Any]) -> Any:
        if state["status"] == "failed":
            error = state.get("error") or {}
            raise step_error_for(key, error.get("name", "Error"), error.get("message", ""))
        return state.get("result")

    def _now(self) -> int:
        return self._scope.clock.now_ms()

    def _count_state(self, key: str, size: int) -> None:
        """Add a new result to the run's stored state; past the limit the run fails."""
        most = int(self._scope.settings.run_max_state_bytes)
        total = self._scope.state_bytes + size
        if total > most:
            raise fatal(self._scope,
                f"run {self._scope.run.id!r} would store {total} bytes of state with the "
                f"result of step {key!r}, over the limit of {most} (setting "
                "steps_run_max_state_bytes): keep large data elsewhere and return references",
                RunLimitError)
        self._scope.state_bytes = total

    @contextmanager
    def _traced(self, key: str, op: str) -> Iterator[None]:
        """A span around a step's work, when tracing (``step.run`` makes its own)."""
        trace = self._scope.trace
        if trace is None:
            yield
            return
        span = trace.step(key, op, 0)
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            span.end(error)

    # -- step.run -----------------------------------------------------------------------
    def run(self, step_id: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` once; later replays return the stored result without calling it.

        A result typed as a pydantic model or a dataclass (``fn``'s return annotation) is
        rebuilt as that type from the stored JSON, on the first run and on replays alike.
        """
        key, pos, state = self._claim(step_id, "run")
        typed = result_type(fn)
        if state is not None and state["status"] in FINAL:
            value = self._replayed(key, state)
            return value if typed is None else typed.load(value, step=key)  # type: ignore[no-any-return]
        if self._scope.planning:
            raise Planned(key)
        if self._scope.branch is not None and self._scope.branch != key:
            raise Stop("not this branch")
        now = self._now()
        attempts = int(state.get("attempts", 0)) if state else 0
        started = int(state.get("started_at", now)) if state else now
        base = {"op": "run", "pos": pos, "started_at": started}
        if self._scope.crashes:  # the process running this step died: those were attempts
            crashes, self._scope.crashes = self._scope.crashes, 0
            lost = WorkerLostError(
                f"the worker process running step {key!r} died (killed, out of memory, a "
                f"hard time limit or os._exit); {crashes} attempt(s) lost")
            return self._retry_or_fail(key, base, attempts + crashes - 1, lost)  # type: ignore[no-any-return]
        if state is not None and state.get("wake_at", 0) > now:
            raise self._suspend("queued", state["wake_at"], key, state)
        cursor = self._cursor
        cursor.current, cursor.current_attempt = key, attempts
        scope = self._scope
        if scope.running is not None:  # the heartbeat tells the store, if it runs long
            scope.running[scope.run.id] = (key, now)
        span = scope.trace.step(key, "run", attempts) if scope.trace is not None else None
        error: BaseException | None = None
        try:
            value = fn(*args, **kwargs)
            if typed is not None:
                value = typed.dump(value, step=key)
            result, encoded = round_trip(value, what=f"the result of step {key!r}",
                                         max_depth=self._scope.settings.json_max_depth)
            limit = int(self._scope.settings.step_max_bytes)
            if len(encoded) > limit:
                raise SerializationError(
                    f"the result of step {key!r} is {len(encoded)} bytes, over the limit of "
                    f"{limit} (setting steps_step_max_bytes): store large data elsewhere "
                    "and return a reference"
                )
            self._count_state(key, len(encoded))
        except SerializationError as exc:
            error = exc
            return self._fail(key, {**base, "attempts": attempts + 1}, exc)  # type: ignore[no-any-return]
        except Exception as exc:
            error = exc
            return self._retry_or_fail(key, base, attempts, exc)  # type: ignore[no-any-return]
        finally:
            cursor.current = None
            if scope.running is not None:
                scope.running.pop(scope.run.id, None)
            if span is not None:
                span.end(error)
        done = {**base, "status": "completed", "attempts": attempts + 1,
                "ended_at": self._now(), "result": result}
        crash_point("step.before_checkpoint", key)
        stored = self._remember(key, done)
        crash_point("step.after_checkpoint", key)
        value = self._replayed(key, stored)
        return value if typed is None else typed.load(value, step=key)  # type: ignore[no-any-return]

    def _retry_or_fail(self, key: str, base: dict[str, Any], attempts: int,
                       exc: Exception) -> Any:
        used = attempts + 1
        retriable = not isinstance(exc, (NonRetriableError, SerializationError, StepError))
        if not retriable or used > self._scope.function.retries:
            return self._fail(key, {**base, "attempts": used}, exc)
        wake_at = self._now() + self._scope.retry_delay_ms(attempts, exc)
        log.info("step %r of run %s failed (attempt %d), retrying: %s",
                 key, self._scope.run.id, used, type(exc).__name__)
        state = {**base, "status": "retrying", "attempts": used, "wake_at": wake_at,
                 "error": error_dict(exc)}
        raise self._suspend("queued", wake_at, key, state)

    def _fail(self, key: str, state: dict[str, Any], exc: BaseException) -> Any:
        final = {**state, "status": "failed", "ended_at": self._now(), "error": error_dict(exc)}
        return self._replayed(key, self._remember(key, final))

    # -- time ---------------------------------------------------------------------------
    def sleep(self, step_id: str, duration: float | int | str | timedelta) -> None:
        """Pause the run durably for ``duration``; no worker is held meanwhile."""
        delta = _checked(lambda: parse_duration(duration, what=f"sleep {step_id!r} duration"))
        self._sleep(step_id, lambda now: now + to_ms(delta))

    def sleep_until(self, step_id: str, when: datetime | str) -> None:
        """Pause the run durably until ``when`` (an aware datetime or ISO-8601 string)."""
        moment = _checked(lambda: parse_when(when, what=f"sleep_until {step_id!r} time"))
        self._sleep(step_id, lambda _now: int(moment.timestamp() * 1000))

    def _sleep(self, step_id: str, wake_at_of: Callable[[int], int]) -> None:
        key, pos, state = self._claim(step_id, "sleep")
        if state is not None and state["status"] in FINAL:
            return
        if self._scope.planning:
            raise Planned(key)
        now = self._now()
        with self._traced(key, "sleep"):
            if state is None:
                state = {"op": "sleep", "pos": pos, "status": "sleeping", "started_at": now,
                         "wake_at": wake_at_of(now), "attempts": 1}
            if state["wake_at"] > now:
                raise self._suspend("sleeping", state["wake_at"], key, state)
            self._remember(key, {**state, "status": "completed", "ended_at": now,
                                 "result": None})

    # -- events -------------------------------------------------------------------------
    def wait_for_event(
        self,
        step_id: str,
        *,
        event: str,
        timeout: float | int | str | timedelta,
        if_exp: str | None = None,
        match: str | None = None,
    ) -> Event | None:
        """Wait for the first matching event sent after the wait began; None on timeout."""
        key, pos, state = self._claim(step_id, "wait_for_event")
        if state is None or state["status"] not in FINAL:
            if self._scope.planning:
                raise Planned(key)
            with self._traced(key, "wait_for_event"):
                state = self._wait(key, pos, state, event, timeout, if_exp, match)
        result = self._replayed(key, state)
        return None if result is None else Event.model_validate(result)

    def _wait(self, key: str, pos: int, state: dict[str, Any] | None, event: str,
              timeout: Any, if_exp: str | None, match: str | None) -> dict[str, Any]:
        now = self._now()
        if state is None:
            waiter = self._waiter(key, event, timeout, if_exp, match, now)
            delta = _checked(lambda: parse_duration(timeout, what=f"wait {key!r} timeout"))
            longest = float(self._scope.settings.wait_max_timeout)
            if delta.total_seconds() > longest:
                raise NonRetriableError(
                    f"wait_for_event {key!r} timeout of {delta} is longer than "
                    f"steps_wait_max_timeout ({longest:.0f}s): pick a shorter timeout"
                )
            state = {"op": "wait_for_event", "pos": pos, "status": "waiting", "started_at": now,
                     "wake_at": now + to_ms(delta), "event": event, "attempts": 1}
            # the waiter exists before the wait begins: an event sent from now on finds it (if
            # it resolves the wait before the suspension below, the wake flag replays the run)
            scope = self._scope
            if not scope.store.begin_wait(scope.run.id, scope.holder, key, state, (waiter,)):
                raise Stop("lost")
            raise self._suspend("waiting", state["wake_at"], key, state)
        if state["wake_at"] > now:
            raise self._suspend("waiting", state["wake_at"], key, state)
        timed_out = {**state, "status": "completed", "ended_at": now, "result": None}
        return self._resolve(key, timed_out)

    def _resolve(self, key: str, state: dict[str, Any]) -> dict[str, Any]:
        """Store a final state for a suspended step, unless an outside writer won the race."""
        scope = self._scope
        if not scope.store.resolve_step(scope.run.id, key, state, wake_at=self._now(),
                                        wake=False):
            fresh = scope.store.load_run(scope.run.id)
            if fresh is None or key not in fresh.steps or fresh.steps[key]["status"] not in FINAL:
                raise Stop("cancelled")
            state = fresh.steps[key]
        scope.run.steps[key] = state
        return state

    def _waiter(self, key: str, event: str, timeout: Any, if_exp: str | None,
                match: str | None, now: int) -> Waiter:
        if not isinstance(event, str) or not event or event.endswith("*"):
            raise ConfigurationError(f"wait_for_event {key!r}: event must be an exact event name")
        if timeout is None:
            raise ConfigurationError(
                f"wait_for_event {key!r} needs a timeout (e.g. timeout='7d'): a wait without "
                "one could hold the run forever"
            )
        if match is not None:
            _checked(lambda: match_to_expression(match))
        if if_exp is not None:
            _checked(lambda: Expression(if_exp, variables=("event", "async"), what="if_exp"))
        run = self._scope.run
        return build_waiter(event, run.id, self._scope.function.id, key,
                            run.events[0] if run.events else {}, match=match,
                            condition=if_exp, registered_at=now)

    def send_event(self, step_id: str, events: Any) -> list[str]:
        """Send events once per run, even when the handler replays (ids derive from the step)."""
        key, pos, state = self._claim(step_id, "send_event")
        if state is not None and state["status"] in FINAL:
            return self._replayed(key, state)  # type: ignore[no-any-return]
        if self._scope.planning:
            raise Planned(key)
        now = self._now()
        seed = f"{self._scope.run.id}|{key}"
        try:
            with self._traced(key, "send_event"):  # the runs they start join this trace
                ids = self._scope.services.send_step_events(events, seed)
        except CeleryStepsError as exc:
            return self._fail(key, {"op": "send_event", "pos": pos, "attempts": 1,  # type: ignore[no-any-return]
                                    "started_at": now}, exc)
        done = {"op": "send_event", "pos": pos, "status": "completed", "attempts": 1,
                "started_at": now, "ended_at": self._now(), "result": ids}
        return self._replayed(key, self._remember(key, done))  # type: ignore[no-any-return]

    # -- composition ----------------------------------------------------------------------
    def invoke(self, step_id: str, *, function: Any, data: dict[str, Any] | None = None,
               timeout: float | int | str | timedelta | None = None) -> Any:
        """Start a run of another function and wait durably for its output."""
        key, pos, state = self._claim(step_id, "invoke")
        if state is not None and state["status"] in FINAL:
            return self._replayed(key, state)
        if self._scope.planning:
            raise Planned(key)
        with self._traced(key, "invoke"):  # the child run joins this trace
            return self._invoke(key, pos, state, function, data, timeout)

    def _invoke(self, key: str, pos: int, state: dict[str, Any] | None, function: Any,
                data: dict[str, Any] | None, timeout: Any) -> Any:
        now = self._now()
        if state is None:
            delta = (None if timeout is None else
                     _checked(lambda: parse_duration(timeout, what=f"invoke {key!r} timeout")))
            state = {"op": "invoke", "pos": pos, "status": "waiting", "started_at": now,
                     "child": child_run_id(self._scope.run.id, key), "attempts": 1,
                     "wake_at": None if delta is None else now + to_ms(delta), "sent": False}
            # recorded before the child starts: a fast child finds the step to resolve
            state = self._remember(key, state)
        if state["status"] not in FINAL and not state.get("sent"):
            # the same child id on every try
            self._scope.services.start_child(self._scope.run, function, data, key)
            crash_point("invoke.after_start_child", key)
            state = self._remember(key, {**state, "sent": True})
        if state["status"] in FINAL:
            return self._replayed(key, state)
        child_state = self._scope.child_outcome(state["child"])
        if child_state is None and state.get("wake_at") is not None and state["wake_at"] <= now:
            child_state = {"status": "failed", "error": {
                "name": "StepTimeoutError",
                "message": f"invoked run {state['child']} did not end in time"}}
        if child_state is None:
            self._wait_checked(key, state, now)
        return self._replayed(key, self._resolve(key, {**state, **child_state, "ended_at": now}))

    def _wait_checked(self, key: str, state: dict[str, Any], now: int,
                      due: int | None = None) -> NoReturn:
        """Suspend a waiting ``invoke``/``run_task``: woken when the awaited run or task ends,
        and also now and then to look for itself, in case that notice was lost (and at
        ``due`` if sooner)."""
        checks = int(state.get("checks", 0))
        wake_at = now + min(CHECK_MAX_MS, CHECK_FIRST_MS * 2 ** min(checks, 16))
        for sooner in (state.get("wake_at"), due):
            if sooner is not None:
                wake_at = min(wake_at, int(sooner))
        raise self._suspend("waiting", wake_at, key, {**state, "checks": checks + 1})

    def parallel(self, callables: Sequence[Callable[[], Any]]) -> tuple[Any, ...]:
        """Run zero-argument callables (each calling ``ctx.step.run``) as parallel steps."""
        return run_parallel(self._scope, self._cursor, tuple(callables))

    def run_task(self, step_id: str, task: Any, *args: Any, **kwargs: Any) -> Any:
        """Send an existing Celery task and suspend, holding no worker, until it has a result."""
        key, pos, state = self._claim(step_id, "run_task")
        if state is not None and state["status"] in FINAL:
            return self._replayed(key, state)
        if self._scope.planning:
            raise Planned(key)
        with self._traced(key, "run_task"):
            return self._run_task(key, pos, state, task, args, kwargs)

    def _run_task(self, key: str, pos: int, state: dict[str, Any] | None, task: Any,
                  args: Any, kwargs: Any) -> Any:
        now = self._now()
        send = (task, args, kwargs)
        due = None
        if state is None:
            # recorded (under the holder's fence) before the task goes out
            state = self._remember(key, {
                "op": "run_task", "pos": pos, "status": "waiting", "started_at": now,
                "task_id": task_run_id(self._scope.run.id, key), "attempts": 1,
                "wake_at": None, "sent": False})
            state = self._send_task(key, state, send, now)
        elif not state.get("sent"):
            state = self._resend_task(key, state, send, now)
        elif state["status"] not in FINAL:  # woken to look: did its result notice get lost?
            seen = self._scope.services.task_outcome(state["task_id"])
            if seen is not None and seen["status"] in FINAL:
                state = self._resolve(key, {**state, **seen, "ended_at": now})
            elif seen is None or not seen.get("alive", True):
                # never seen starting (the broker lost it), or its process died running it
                due = self._resend_at(state)
                if now >= due:
                    state = self._send_task(key, state, send, now)
                    due = self._resend_at(state)
        if state["status"] in FINAL:
            return self._replayed(key, state)
        self._wait_checked(key, state, now, due)

    def _resend_at(self, state: dict[str, Any]) -> int:
        """When a task not seen running is sent again: ``steps_run_task_resend_after`` after
        it was last sent, doubling with each send."""
        after = float(self._scope.settings.run_task_resend_after) * 1000
        sends = max(1, int(state.get("sends", 1)))
        last = int(state.get("sent_at", state["started_at"]))
        return last + int(min(after * 2 ** min(sends - 1, 16), CHECK_MAX_MS))

    def _send_task(self, key: str, state: dict[str, Any], send: tuple[Any, Any, Any],
                   now: int) -> dict[str, Any]:
        """Publish the task (again, at least once, if it was lost); the checks start over."""
        task, args, kwargs = send
        try:
            self._scope.services.send_task_step(self._scope.run, task, args, kwargs, key)
        except Exception:  # refused: the next attempt sends it at once
            self._remember(key, {**state, "refused": True})
            raise
        crash_point("run_task.after_publish", key)
        sends = int(state.get("sends", 0)) + 1 if state.get("sent") else 1
        return self._remember(key, {**state, "sent": True, "refused": False, "sent_at": now,
                                    "sends": sends, "checks": 0})

    def _resend_task(self, key: str, state: dict[str, Any], send: tuple[Any, Any, Any],
                     now: int) -> dict[str, Any]:
        """The last execution died around the publish: it may or may not have gone out."""
        if state.get("refused"):
            return self._send_task(key, state, send, now)
        seen = self._scope.services.task_outcome(state["task_id"])
        if seen is not None:  # it went out: started or ended
            return self._remember(key, {**state, "sent": True})
        resend_at = self._resend_at(state)
        if now >= resend_at:  # not seen after a long while: it was lost (at least once)
            return self._send_task(key, state, send, now)
        raise self._suspend("waiting", resend_at, key, state)


CHECK_FIRST_MS = 10_000
CHECK_MAX_MS = 3_600_000


def _checked(build: Callable[[], T]) -> T:
    """Run a validation; a bad argument fails the step at once (never retried)."""
    try:
        return build()
    except ConfigurationError as exc:
        raise NonRetriableError(str(exc)) from None


def child_run_id(parent_run_id: str, step_key: str) -> str:
    """The run id of the child an ``invoke`` step starts (stable across replays)."""
    return "run_" + derived_id(parent_run_id, step_key, "invoke")


TASK_ID_PREFIX = "task_"


def task_run_id(run_id: str, step_key: str) -> str:
    """The Celery task id a ``run_task`` step sends (stable across replays)."""
    return TASK_ID_PREFIX + derived_id(run_id, step_key)


def derived_id(*parts: str) -> str:
    """A stable id from parts: the same inputs always give the same id (dedupe)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
    return digest[:32]
