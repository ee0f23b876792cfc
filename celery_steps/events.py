"""The :class:`Event` model and the checks an event passes before it is stored."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints, ValidationError

from celery_steps.errors import InvalidEventError
from celery_steps.jsonshape import nesting_depth, too_deep
from celery_steps.telemetry import current_traceparent

MAX_NAME_LENGTH = 256
INTERNAL_PREFIX = "celery_steps/"
FUNCTION_FAILED = "celery_steps/function.failed"
FUNCTION_FINISHED = "celery_steps/function.finished"
FUNCTION_CANCELLED = "celery_steps/function.cancelled"
SYSTEM_EVENTS = frozenset({FUNCTION_FAILED, FUNCTION_FINISHED, FUNCTION_CANCELLED})
FUNCTION_INVOKED = "celery_steps/function.invoked"
CRON_EVENT = "celery_steps/cron"
# function.failed carries the failed run's first event in data.event: two levels deeper.
_WRAPPED_EVENT_LEVELS = 2
TraceParent = Annotated[str, StringConstraints(
    pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")]


def new_id() -> str:
    return uuid.uuid4().hex


class Event(BaseModel):
    """Something that happened. Events start runs, resume waits and cancel runs."""

    name: str
    data: dict[str, Any] = Field(default_factory=dict)
    id: str = Field(default_factory=new_id)
    ts: int = Field(default_factory=lambda: int(time.time() * 1000))
    user: dict[str, Any] | None = None
    v: str | None = None
    traceparent: TraceParent | None = Field(default_factory=current_traceparent)
    """The W3C trace context of the span current where the event was made (with
    OpenTelemetry; see docs/operating.md): the runs it starts join that trace."""

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        return cls.model_validate_json(raw)


def build_events(
    name_or_events: str | Event | Mapping[str, Any] | Sequence[Event | Mapping[str, Any]],
    data: Mapping[str, Any] | None = None,
    *,
    id: str | None = None,
    user: Mapping[str, Any] | None = None,
    ts: int | None = None,
) -> list[Event]:
    """Turn what ``steps.send`` accepts into a list of Events, or raise InvalidEventError."""
    if isinstance(name_or_events, str):
        fields: dict[str, Any] = {"name": name_or_events, "data": {} if data is None else data}
        if id is not None:
            fields["id"] = id
        if user is not None:
            fields["user"] = user
        if ts is not None:
            fields["ts"] = ts
        items: list[Any] = [fields]
    elif isinstance(name_or_events, (Event, Mapping)):
        items = [name_or_events]
    elif isinstance(name_or_events, Sequence):
        items = list(name_or_events)
    else:
        raise InvalidEventError(
            f"cannot send {type(name_or_events).__name__}: pass an event name, an Event, "
            "or a list of Events"
        )
    if not items:
        raise InvalidEventError("no events to send: the list is empty")
    return [_coerce(item) for item in items]


def _coerce(item: Any) -> Event:
    if isinstance(item, Event):
        return item
    if not isinstance(item, Mapping):
        raise InvalidEventError(f"an event must be an Event or a dict, got {type(item).__name__}")
    try:
        return Event.model_validate(dict(item))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'event'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidEventError(f"invalid event: {problems}") from None


def validate_event(event: Event, *, max_bytes: int, max_depth: int,
                   allow_internal: bool = False) -> str:
    """Check an event and return its JSON encoding; raise InvalidEventError naming the problem.

    ``max_depth`` bounds how deeply ``data`` and ``user`` nest (setting steps_json_max_depth).
    """
    if not isinstance(event.name, str) or not event.name.strip():
        raise InvalidEventError("event has no name: give it a name such as 'shop/order.paid'")
    if len(event.name) > MAX_NAME_LENGTH:
        raise InvalidEventError(f"event name is longer than {MAX_NAME_LENGTH} characters")
    if event.name.endswith("/*"):
        raise InvalidEventError(
            f"event name {event.name!r} ends in '/*': that is a trigger pattern, not a name"
        )
    if not allow_internal and event.name.startswith(INTERNAL_PREFIX):
        raise InvalidEventError(
            f"event name {event.name!r} uses the reserved prefix {INTERNAL_PREFIX!r}"
        )
    if not event.id or len(event.id) > 256:
        raise InvalidEventError("event id must be a non-empty string of at most 256 characters")
    if allow_internal and event.name in SYSTEM_EVENTS:  # they carry a run's event or output
        max_depth += _WRAPPED_EVENT_LEVELS
    for field in ("data", "user"):
        if nesting_depth(getattr(event, field), limit=max_depth) > max_depth:
            raise InvalidEventError(too_deep(f"the {field} of event {event.name!r}", max_depth))
    try:
        encoded = event.to_json()
    except (TypeError, ValueError) as exc:
        raise InvalidEventError(
            f"event {event.name!r} has data that is not JSON: {exc}. "
            "Send only dicts, lists, strings, numbers, booleans and None"
        ) from None
    size = len(encoded.encode())
    if size > max_bytes:
        raise InvalidEventError(
            f"event {event.name!r} is {size} bytes, over the limit of {max_bytes} bytes "
            "(setting steps_event_max_bytes): store large payloads elsewhere and send a reference"
        )
    return encoded
