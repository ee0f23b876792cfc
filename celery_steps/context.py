"""The :class:`Context` a handler receives, and :class:`Steps`, the interface of ``ctx.step``.

``Steps`` is the public surface of the step tools (the engine implements it). It lives here,
below the engine, so that declarations and type checkers know ``ctx.step`` without importing
the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from celery_steps.events import Event

T = TypeVar("T")
Duration = float | int | str | timedelta


class Steps(Protocol):
    """``ctx.step``: every call is memoized by its step id, so a replay never repeats it."""

    @property
    def attempt(self) -> int:
        """0 on the first attempt of the current step (or of the handler body)."""

    def run(self, step_id: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` once; later replays return the stored result without calling it."""

    def sleep(self, step_id: str, duration: Duration) -> None:
        """Pause the run durably for ``duration``; no worker is held meanwhile."""

    def sleep_until(self, step_id: str, when: datetime | str) -> None:
        """Pause the run durably until ``when`` (an aware datetime or ISO-8601 string)."""

    def wait_for_event(self, step_id: str, *, event: str, timeout: Duration,
                       if_exp: str | None = None, match: str | None = None) -> Event | None:
        """Wait for the first matching event sent after the wait began; None on timeout."""

    def send_event(self, step_id: str, events: Any) -> list[str]:
        """Send events once per run, even when the handler replays."""

    def invoke(self, step_id: str, *, function: Any, data: dict[str, Any] | None = None,
               timeout: Duration | None = None) -> Any:
        """Start a run of another function and wait durably for its output."""

    def parallel(self, callables: Sequence[Callable[[], Any]]) -> tuple[Any, ...]:
        """Run zero-argument callables (each calling ``ctx.step.run``) as parallel steps."""

    def run_task(self, step_id: str, task: Any, *args: Any, **kwargs: Any) -> Any:
        """Send an existing Celery task and suspend, holding no worker, until it has a result."""


@dataclass
class Context:
    """What a handler gets: the event(s), the step tools and the run's identity."""

    event: Event
    events: list[Event]
    step: Steps
    run_id: str
    function_id: str
    logger: logging.LoggerAdapter = field(repr=False)  # type: ignore[type-arg]

    @property
    def attempt(self) -> int:
        """0 on the first attempt of the current step (or of the handler body)."""
        return self.step.attempt
