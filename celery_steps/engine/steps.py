"""``ctx.step``: the step tools. Each call is memoized by its key (step id + occurrence)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar

from celery_steps.durations import parse_duration, parse_when, to_ms
from celery_steps.engine.interrupts import Planned, Stop, Suspend
from celery_steps.engine.parallel import run_parallel
from celery_steps.engine.results import result_type
from celery_steps.engine.scope import RunScope
from celery_steps.engine.serialization import round_trip
from celery_steps.errors import (
    CeleryStepsError,
    ConfigurationError,
    NonDeterminismError,
    NonRetriableError,
    RunLimitError,
    SerializationError,
    StepError,
    WorkerLostError,
    error_dict,
    step_error_for,
)
from celery_steps.events import Event
from celery_steps.expressions import Expression, match_key_at, match_to_expression
from celery_steps.faults import crash_point
from celery_steps.store.base import FINAL, RunRecord, Suspension, Waiter

T = TypeVar("T")
log = logging.getLogger("celery_steps.steps")
MAX_STEP_ID = 200


class NestedStepError(NonRetriableError):
    """A step tool was called inside another step's function."""


class StepTools:
    """The object behind ``ctx.step``. One per execution of a handler."""

    def __init__(self, scope: RunScope) -> None:
        self._scope = scope
        self._order = [key for key, _ in scope.run.ordered_steps()]
        self._counters: dict[str, int] = {}
        self._pos = 0
        self._current: str | None = None
        self._current_attempt = 0

    # -- bookkeeping --------------------------------------------------------------------
    @property
    def run_record(self) -> RunRecord:
        return self._scope.run

    @property
    def replaying(self) -> bool:
        """True while the handler is still passing steps recorded by earlier executions."""
        return self._pos < len(self._order)

    @property
    def attempt(self) -> int:
        return self._current_attempt if self._current is not None else self._scope.run.attempt

    @property
    def step_id(self) -> str | None:
        """The key of the step whose function runs now (None between steps)."""
        return self._current

    def _claim(self, step_id: str, op: str) -> tuple[str, int, dict[str, Any] | None]:
        if self._current is not None:
            raise NestedStepError(
                f"ctx.step.{op}({step_id!r}) was called inside step {self._current!r}: "
                "steps cannot be nested; call it from the handler instead"
            )
        if not isinstance(step_id, str) or not step_id or len(step_id) > MAX_STEP_ID:
            raise NonRetriableError(
                f"step id {step_id!r} is invalid: use a non-empty string of at most "
                f"{MAX_STEP_ID} characters"
            )
        if "|" in step_id:
            raise NonRetriableError(f"step id {step_id!r} must not contain '|'")
        finish = self._scope.run.deadlines.get("finish")
        if finish is not None and self._now() >= finish:
            self._scope.services.cancel(
                self._scope.run.id, reason=f"run did not finish within timeouts.finish ({op} "
                f"{step_id!r} was next)")
            raise Stop("cancelled")
        n = self._counters.get(step_id, 0)
        self._counters[step_id] = n + 1
        key = step_id if n == 0 else f"{step_id}:{n}"
        pos = self._pos
        self._pos += 1
        steps = self._scope.run.steps
        if pos < len(self._order):
            recorded = self._order[pos]
            recorded_op = steps[recorded].get("op")
            if recorded != key or recorded_op != op:
                raise self._fatal(
                    f"step #{pos + 1} of run {self._scope.run.id!r} was recorded as "
                    f"{recorded!r} ({recorded_op}) but the handler now calls {key!r} ({op}): "
                    "the code changed while the run was in flight. Keep step ids and order "
                    "stable for running runs, or give new logic new step ids"
                )
            return key, pos, steps[recorded]
        if key in steps:
            raise self._fatal(
                f"step {key!r} of run {self._scope.run.id!r} was recorded at another position: "
                "the handler's step order changed while the run was in flight"
            )
        most = int(self._scope.settings.run_max_steps)
        if len(self._order) >= most:
            raise self._fatal(
                f"run {self._scope.run.id!r} reached the limit of {most} steps (setting "
                f"steps_run_max_steps) at step {key!r}: split the work over several runs "
                "(e.g. ctx.step.invoke or send_event per batch)", RunLimitError)
        self._order.append(key)
        return key, pos, None

    def checkpoint(self) -> tuple[int, dict[str, int]]:
        """Where the handler is in its steps (``parallel`` rewinds to run one branch)."""
        return self._pos, dict(self._counters)

    def restore(self, point: tuple[int, dict[str, int]]) -> None:
        self._pos, self._counters = point[0], dict(point[1])

    def position_of(self, key: str) -> int:
        return self._order.index(key)

    def save_state(self, key: str, state: dict[str, Any]) -> None:
        """Store a non-final state under the lease (``parallel`` records its branches)."""
        self._remember(key, state)

    def _fatal(self, message: str, kind: type[CeleryStepsError] = NonDeterminismError) -> (
        CeleryStepsError
    ):
        """An error the run fails with even if user code catches it."""
        exc = kind(message)
        self._scope.fatal = exc
        return exc

    def _remember(self, key: str, state: dict[str, Any]) -> dict[str, Any]:
        """Checkpoint a state under the lease; returns the state that won."""
        if self._scope.branch is not None:
            return self._scope.save_branch(key, state)
        status, existing = self._scope.store.save_step(
            self._scope.run.id, self._scope.holder, key, state
        )
        if status == "exists" and existing is not None:
            state = existing
        elif status in ("lost", "cancelled"):
            raise Stop(status)
        self._scope.run.steps[key] = state
        return state

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
            raise self._fatal(
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
        self._current, self._current_attempt = key, attempts
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
            self._current = None
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
        path = None
        wanted = None
        if match is not None:
            _checked(lambda: match_to_expression(match))
            path = match
            wanted = match_key_at(self._scope.run.events[0], match)
        if if_exp is not None:
            _checked(lambda: Expression(if_exp, variables=("event", "async"), what="if_exp"))
        return Waiter(event, self._scope.run.id, self._scope.function.id, key, now,
                      path, wanted, if_exp)

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

    def _wait_checked(self, key: str, state: dict[str, Any], now: int) -> NoReturn:
        """Suspend a waiting ``invoke``/``run_task``: woken when the awaited run or task ends,
        and also now and then to look for itself, in case that notice was lost."""
        checks = int(state.get("checks", 0))
        check_at = now + min(CHECK_MAX_MS, CHECK_FIRST_MS * 2 ** min(checks, 16))
        timeout = state.get("wake_at")
        wake_at = check_at if timeout is None else min(int(timeout), check_at)
        raise self._suspend("waiting", wake_at, key, {**state, "checks": checks + 1})

    def parallel(self, callables: Sequence[Callable[[], Any]]) -> tuple[Any, ...]:
        """Run zero-argument callables (each calling ``ctx.step.run``) as parallel steps."""
        return run_parallel(self._scope, self, tuple(callables))

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
        if state is None:
            # recorded (under the holder's fence) before the task goes out
            state = self._remember(key, {
                "op": "run_task", "pos": pos, "status": "waiting", "started_at": now,
                "task_id": task_run_id(self._scope.run.id, key), "attempts": 1,
                "wake_at": None, "sent": False})
            state = self._send_task(key, state, send)
        elif not state.get("sent"):
            state = self._resend_task(key, state, send, now)
        elif state["status"] not in FINAL:  # woken to look: did its result notice get lost?
            seen = self._scope.services.task_outcome(state["task_id"])
            if seen is not None and seen["status"] in FINAL:
                state = self._resolve(key, {**state, **seen, "ended_at": now})
        if state["status"] in FINAL:
            return self._replayed(key, state)
        self._wait_checked(key, state, now)

    def _send_task(self, key: str, state: dict[str, Any], send: tuple[Any, Any, Any]) -> dict[
        str, Any
    ]:
        task, args, kwargs = send
        try:
            self._scope.services.send_task_step(self._scope.run, task, args, kwargs, key)
        except Exception:  # refused: the next attempt sends it at once
            self._remember(key, {**state, "refused": True})
            raise
        crash_point("run_task.after_publish", key)
        return self._remember(key, {**state, "sent": True, "refused": False})

    def _resend_task(self, key: str, state: dict[str, Any], send: tuple[Any, Any, Any],
                     now: int) -> dict[str, Any]:
        """The last execution died around the publish: it may or may not have gone out."""
        if state.get("refused"):
            return self._send_task(key, state, send)
        seen = self._scope.services.task_outcome(state["task_id"])
        if seen is not None:  # it went out: started or ended
            return self._remember(key, {**state, "sent": True})
        resend_at = int(state["started_at"]) + RESEND_AFTER_MS
        if now >= resend_at:  # not seen after a long while: it was lost (at least once)
            return self._send_task(key, state, send)
        raise self._suspend("waiting", resend_at, key, state)


CHECK_FIRST_MS = 10_000
CHECK_MAX_MS = 3_600_000
# A run_task publish whose fate is unknown (the process died around it) is sent again only if
# the task has not been seen starting or ending this long after the first try.
RESEND_AFTER_MS = 300_000


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
