"""Declared functions: validation at decoration time and the trigger lookup table."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Protocol

from celery_steps.context import Context
from celery_steps.crons import CronSchedule, parse_cron
from celery_steps.durations import parse_duration
from celery_steps.errors import ConfigurationError
from celery_steps.events import FUNCTION_FAILED
from celery_steps.expressions import Expression, match_to_expression
from celery_steps.options import (
    BatchEvents,
    CancelOn,
    Concurrency,
    Debounce,
    Duration,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
    Timeouts,
    Trigger,
    TriggerCron,
    TriggerEvent,
)

FUNCTION_ID = re.compile(r"[A-Za-z0-9._/-]{1,128}")
EVENT_PATTERN = re.compile(r"[^\s*]+(/\*)?|\*")
TASK_PREFIX = "celery_steps.fn."

Handler = Callable[[Context], Any]


class RunStarter(Protocol):
    """What ``fn.invoke()`` calls: the runtime that starts runs."""

    def start_run(self, fn: Function, *, data: dict[str, Any] | None = None,
                  user: dict[str, Any] | None = None) -> str: ...


@dataclass(frozen=True)
class FlowControl:
    """Flow-control options, kept together so Function stays small."""

    concurrency: Concurrency | Sequence[Concurrency] | None = None
    throttle: Throttle | None = None
    rate_limit: RateLimit | None = None
    debounce: Debounce | None = None
    priority: Priority | None = None
    batch_events: BatchEvents | None = None
    idempotency: str | None = None
    singleton: Singleton | None = None

    @property
    def concurrency_limits(self) -> tuple[Concurrency, ...]:
        """The concurrency constraints, whether one or a list was declared."""
        if self.concurrency is None:
            return ()
        if isinstance(self.concurrency, Concurrency):
            return (self.concurrency,)
        return tuple(self.concurrency)


@dataclass(frozen=True)
class CompiledCancel:
    option: CancelOn
    condition: Expression
    timeout: timedelta | None


@dataclass
class Function:
    """A durable function: its handler, triggers and options. Call ``fn.invoke()`` to start one."""

    id: str
    handler: Handler
    triggers: tuple[TriggerEvent | TriggerCron, ...]
    retries: int
    name: str
    queue: str | None = None
    on_failure: Function | None = None
    cancel_on: tuple[CompiledCancel, ...] = ()
    timeouts: Timeouts | None = None
    flow: FlowControl = field(default_factory=FlowControl)
    conditions: dict[TriggerEvent, Expression] = field(default_factory=dict)
    crons: tuple[CronSchedule, ...] = ()
    internal: bool = False
    idempotency: Expression | None = None
    _starter: RunStarter | None = field(default=None, repr=False)

    @property
    def task_name(self) -> str:
        return TASK_PREFIX + self.id

    def __call__(self, ctx: Context) -> Any:
        """Call the handler directly (handy in unit tests with ``celery_steps.testing``)."""
        return self.handler(ctx)

    def invoke(
        self, data: dict[str, Any] | None = None, *, user: dict[str, Any] | None = None
    ) -> str:
        """Start a run of this function directly; returns its run id."""
        if self._starter is None:
            raise ConfigurationError(f"function {self.id!r} is not attached to a CelerySteps app")
        return self._starter.start_run(self, data=data, user=user)

    def event_triggers(self) -> Iterable[TriggerEvent]:
        return (t for t in self.triggers if isinstance(t, TriggerEvent))

    def accepts(self, trigger: TriggerEvent, event: dict[str, Any]) -> bool:
        condition = self.conditions.get(trigger)
        return condition is None or condition.matches(event=event)


def validate_id(function_id: object) -> str:
    if not isinstance(function_id, str) or not FUNCTION_ID.fullmatch(function_id):
        raise ConfigurationError(
            f"function id {function_id!r} is invalid: use 1 to 128 characters from "
            "A-Z a-z 0-9 . _ / -"
        )
    return function_id


def normalize_triggers(function_id: str, trigger: Trigger | Sequence[Trigger]) -> tuple[
    TriggerEvent | TriggerCron, ...
]:
    items: Sequence[Any] = trigger if isinstance(trigger, (list, tuple)) else [trigger]
    if not items:
        raise ConfigurationError(f"function {function_id!r} has no trigger: give an event or cron")
    out: list[TriggerEvent | TriggerCron] = []
    for item in items:
        if isinstance(item, str):
            item = TriggerEvent(item)
        if isinstance(item, TriggerEvent):
            if not isinstance(item.event, str) or not EVENT_PATTERN.fullmatch(item.event):
                raise ConfigurationError(
                    f"function {function_id!r}: trigger event {item.event!r} is not a valid "
                    "event name (no spaces; '*' only as a final '/*')"
                )
        elif not isinstance(item, TriggerCron):
            raise ConfigurationError(
                f"function {function_id!r}: trigger {item!r} must be an event name, "
                "TriggerEvent or TriggerCron"
            )
        out.append(item)
    return tuple(out)


@dataclass(frozen=True)
class Declaration:
    """Everything ``@steps.function(...)`` was given, before validation."""

    id: str
    trigger: Trigger | Sequence[Trigger]
    retries: int = 4
    on_failure: Handler | None = None
    cancel_on: Sequence[CancelOn] | None = None
    timeouts: Timeouts | None = None
    flow: FlowControl = field(default_factory=FlowControl)
    queue: str | None = None
    name: str | None = None


def build_function(handler: Handler, spec: Declaration, starter: RunStarter | None) -> Function:
    """Validate everything about a declaration and return the Function (not yet registered)."""
    function_id = validate_id(spec.id)
    if not callable(handler):
        raise ConfigurationError(f"function {function_id!r}: the handler must be callable")
    retries = spec.retries
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 100:
        raise ConfigurationError(f"function {function_id!r}: retries must be an int in 0..100")
    triggers = normalize_triggers(function_id, spec.trigger)
    conditions: dict[TriggerEvent, Expression] = {}
    crons: list[CronSchedule] = []
    for t in triggers:
        if isinstance(t, TriggerEvent) and t.if_exp is not None:
            conditions[t] = Expression(t.if_exp, what=f"if_exp of function {function_id!r}")
        elif isinstance(t, TriggerCron):
            crons.append(parse_cron(t.cron, t.tz, function_id=function_id))
    flow = _check_flow(function_id, spec.flow)
    fn = Function(
        id=function_id,
        handler=handler,
        triggers=triggers,
        retries=retries,
        name=spec.name or str(getattr(handler, "__name__", function_id)),
        queue=spec.queue,
        cancel_on=tuple(_compile_cancel(function_id, c) for c in spec.cancel_on or ()),
        timeouts=_check_timeouts(function_id, spec.timeouts),
        flow=flow,
        conditions=conditions,
        crons=tuple(crons),
        idempotency=(None if flow.idempotency is None else
                     Expression(flow.idempotency, what=f"idempotency of function {function_id!r}")),
        _starter=starter,
    )
    if spec.on_failure is not None:
        fn.on_failure = _failure_handler(fn, spec.on_failure, starter)
    return fn


def _failure_handler(fn: Function, handler: Handler, starter: RunStarter | None) -> Function:
    """The internal function that runs ``on_failure`` when a run of ``fn`` fails for good."""
    if not callable(handler):
        raise ConfigurationError(f"function {fn.id!r}: on_failure must be callable")
    failed_trigger = TriggerEvent(
        FUNCTION_FAILED, if_exp=f"event.data.function_id == {json.dumps(fn.id)}"
    )
    return Function(
        id=f"{fn.id}/on-failure"[:128],
        handler=handler,
        triggers=(failed_trigger,),
        retries=fn.retries,
        name=f"{fn.name} (on_failure)",
        queue=fn.queue,
        conditions={failed_trigger: Expression(failed_trigger.if_exp or "", what="on_failure")},
        internal=True,
        _starter=starter,
    )


def _compile_cancel(function_id: str, option: CancelOn) -> CompiledCancel:
    if not isinstance(option, CancelOn):
        raise ConfigurationError(f"function {function_id!r}: cancel_on takes CancelOn objects")
    what = f"cancel_on of function {function_id!r}"
    parts = []
    if option.match is not None:
        try:
            parts.append(match_to_expression(option.match))
        except ConfigurationError as exc:
            raise ConfigurationError(f"{what}: {exc}") from None
    if option.if_exp is not None:
        Expression(option.if_exp, variables=("event", "async"), what=f"if_exp of {what}")
        parts.append(f"({option.if_exp})")
    source = " && ".join(parts) or "true"
    condition = Expression(source, variables=("event", "async"), what=what)
    timeout = (None if option.timeout is None else
               parse_duration(option.timeout, what=f"timeout of {what}"))
    return CompiledCancel(option, condition, timeout)


def _check_timeouts(function_id: str, timeouts: Timeouts | None) -> Timeouts | None:
    if timeouts is None:
        return None
    if not isinstance(timeouts, Timeouts):
        raise ConfigurationError(f"function {function_id!r}: timeouts must be a Timeouts object")
    for label, value in (("start", timeouts.start), ("finish", timeouts.finish)):
        if value is not None:
            parse_duration(value, what=f"timeouts.{label} of function {function_id!r}")
    return timeouts


MIN_PERIOD = timedelta(seconds=1)
MAX_CONCURRENCY_CONSTRAINTS = 2
# Combinations refused at declaration: (option, option, why, what to do instead).
EXCLUSIVE = (
    ("debounce", "batch_events", "both collect events into one run",
     "choose one of them"),
    ("batch_events", "rate_limit", "a batch run has many events and a rate limit skips events",
     "throttle the batch runs instead (throttle=Throttle(...))"),
    ("batch_events", "priority", "a batch run has many events to evaluate the priority over",
     "leave priority out"),
    ("batch_events", "idempotency", "a batch run has many events to take the key from",
     "deduplicate the events themselves (send them with an id)"),
    ("debounce", "idempotency", "the debounced run would get one id per key value forever",
     "give the debounce a key instead (Debounce(key=...))"),
    ("batch_events", "singleton", "the collecting run is already the key's one pending run",
     "use concurrency=Concurrency(limit=1, key=...) to keep runs from overlapping"),
    ("debounce", "singleton", "the collecting run is already the key's one pending run",
     "use concurrency=Concurrency(limit=1, key=...) to keep runs from overlapping"),
)
OPTION_TYPES: dict[str, type] = {
    "throttle": Throttle,
    "rate_limit": RateLimit,
    "debounce": Debounce,
    "priority": Priority,
    "batch_events": BatchEvents,
    "singleton": Singleton,
}


def _check_flow(function_id: str, flow: FlowControl) -> FlowControl:
    """Validate every flow-control option and combination; the flow with ``concurrency``
    normalized (a list becomes a tuple)."""
    where = f"function {function_id!r}"
    for attr, cls in OPTION_TYPES.items():
        value = getattr(flow, attr)
        if value is not None and not isinstance(value, cls):
            raise ConfigurationError(f"{where}: {attr} must be a {cls.__name__} object, "
                                     f"got {value!r}")
        key = getattr(value, "key", None) if value is not None else None
        if key is not None:
            Expression(key, what=f"{attr}.key of {where}")
    flow = replace(flow, concurrency=_check_concurrency(where, flow.concurrency))
    for attr in ("throttle", "rate_limit"):
        option = getattr(flow, attr)
        if option is not None:
            _positive_int(where, f"{attr}.limit", option.limit)
            _period(where, f"{attr}.period", option.period)
    if flow.throttle is not None:
        _positive_int(where, "throttle.burst", flow.throttle.burst)
    if flow.debounce is not None:
        _period(where, "debounce.period", flow.debounce.period)
        if flow.debounce.timeout is not None:
            _period(where, "debounce.timeout", flow.debounce.timeout)
    if flow.batch_events is not None:
        _positive_int(where, "batch_events.max_size", flow.batch_events.max_size)
        _period(where, "batch_events.timeout", flow.batch_events.timeout)
    if flow.singleton is not None and flow.singleton.mode not in ("skip", "cancel"):
        raise ConfigurationError(
            f"{where}: singleton.mode must be 'skip' or 'cancel', got {flow.singleton.mode!r}"
        )
    if flow.priority is not None:
        Expression(flow.priority.run, what=f"priority.run of {where}")
    if flow.idempotency is not None:
        Expression(flow.idempotency, what=f"idempotency of {where}")
    for first, second, why, instead in EXCLUSIVE:
        if getattr(flow, first) is not None and getattr(flow, second) is not None:
            raise ConfigurationError(
                f"{where}: {first} and {second} cannot be combined ({why}); {instead}"
            )
    return flow


def _check_concurrency(where: str, value: object) -> Concurrency | tuple[Concurrency, ...] | None:
    if value is None or isinstance(value, Concurrency):
        items: tuple[object, ...] = () if value is None else (value,)
    elif isinstance(value, (list, tuple)):
        items = tuple(value)
        if not 1 <= len(items) <= MAX_CONCURRENCY_CONSTRAINTS:
            raise ConfigurationError(
                f"{where}: concurrency takes one Concurrency or a list of one or two, got "
                f"{len(items)}"
            )
    else:
        raise ConfigurationError(
            f"{where}: concurrency must be a Concurrency object or a list of at most two, "
            f"got {value!r}"
        )
    seen: set[tuple[str, str | None]] = set()
    for index, item in enumerate(items):
        label = "concurrency" if len(items) == 1 else f"concurrency[{index}]"
        if not isinstance(item, Concurrency):
            raise ConfigurationError(f"{where}: {label} must be a Concurrency object, got "
                                     f"{item!r}")
        _positive_int(where, f"{label}.limit", item.limit)
        if item.scope not in ("fn", "env"):
            raise ConfigurationError(f"{where}: {label}.scope must be 'fn' or 'env', got "
                                     f"{item.scope!r}")
        if item.key is not None:
            Expression(item.key, what=f"{label}.key of {where}")
        elif item.scope == "env":
            raise ConfigurationError(
                f"{where}: {label} has scope 'env' but no key: the key names the limit shared "
                "by every function that uses it, e.g. key='\"openai\"'"
            )
        if (item.scope, item.key) in seen:
            raise ConfigurationError(
                f"{where}: {label} repeats the scope and key of another constraint; keep one"
            )
        seen.add((item.scope, item.key))
    if isinstance(value, (list, tuple)):
        return items  # type: ignore[return-value]
    return value  # type: ignore[return-value]


def _positive_int(where: str, label: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{where}: {label} must be a positive integer, got {value!r}")


def _period(where: str, label: str, value: Duration) -> None:
    period = parse_duration(value, what=f"{label} of {where}")
    if period < MIN_PERIOD:
        raise ConfigurationError(
            f"{where}: {label} is {value!r}, under the minimum of 1 second (a shorter period "
            "would turn the control off); use '1s' or more"
        )


class Registry:
    """Functions by id, plus the trigger table: exact names in a dict, ``prefix/*`` wildcards."""

    def __init__(self) -> None:
        self.by_id: dict[str, Function] = {}
        self._exact: dict[str, list[tuple[Function, TriggerEvent]]] = {}
        self._prefixes: list[tuple[str, Function, TriggerEvent]] = []

    def add(self, fn: Function) -> None:
        if fn.id in self.by_id:
            raise ConfigurationError(
                f"function id {fn.id!r} is declared twice: ids must be unique per app"
            )
        self.by_id[fn.id] = fn
        for trigger in fn.event_triggers():
            if trigger.event == "*":
                self._prefixes.append(("", fn, trigger))
            elif trigger.event.endswith("/*"):
                self._prefixes.append((trigger.event[:-1], fn, trigger))
            else:
                self._exact.setdefault(trigger.event, []).append((fn, trigger))

    def matching(self, event_name: str) -> list[tuple[Function, TriggerEvent]]:
        """Every (function, trigger) whose event pattern matches ``event_name``."""
        found = list(self._exact.get(event_name, ()))
        found.extend((fn, t) for prefix, fn, t in self._prefixes if event_name.startswith(prefix))
        return found
