"""Django integration: add ``"celery_steps.contrib.django"`` to ``INSTALLED_APPS``.

The app config imports each installed app's ``steps`` module at start-up, so the functions
declared there are registered. :func:`send_on_commit` sends events only once the current
database transaction commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.db import transaction

from celery_steps.events import Event, build_events, validate_event

if TYPE_CHECKING:
    from celery_steps.extension import CelerySteps

__all__ = ["send_on_commit"]


def send_on_commit(
    steps: CelerySteps,
    name_or_events: str | Event | Mapping[str, Any] | Sequence[Event | Mapping[str, Any]],
    data: Mapping[str, Any] | None = None,
    *,
    id: str | None = None,
    user: Mapping[str, Any] | None = None,
    ts: int | None = None,
    using: str | None = None,
    robust: bool = False,
) -> list[str]:
    """Send events with ``steps.send`` once the transaction on ``using`` commits.

    Outside a transaction (autocommit) the events are sent at once. The events are built and
    validated now, so a bad event raises :class:`~celery_steps.InvalidEventError` here, not
    after the commit. Returns the event ids the events will be sent with; a rolled-back
    transaction sends nothing. ``robust=True`` logs a failing send instead of raising it
    (Django's ``on_commit(robust=...)``).
    """
    events = build_events(name_or_events, data, id=id, user=user, ts=ts)
    max_bytes = int(steps.settings.event_max_bytes)
    for event in events:
        validate_event(event, max_bytes=max_bytes, max_depth=steps.settings.json_max_depth)
    ids = [event.id for event in events]

    def send() -> None:
        steps.send(events)

    transaction.on_commit(send, using=using, robust=robust)
    return ids
