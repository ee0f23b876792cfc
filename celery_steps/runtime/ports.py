"""The one port through which the runtime reaches the message broker.

The runtime never imports Celery: it publishes through a :class:`Transport`, which the Celery
glue (:mod:`celery_steps.integration.transport`) implements. A fake transport is all a unit
test of the runtime needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol


class Publisher(Protocol):
    """Sends the runtime's messages. Each method raises when the broker refuses the message."""

    def publish_route(self, event_id: str) -> None:
        """Send the task that routes a stored event."""

    def enqueue_run(self, function_id: str, run_id: str, *, priority: int | None = None) -> None:
        """Send the task that executes (or resumes) a run, with no ETA; ``priority`` (seconds,
        -600..600, from the function's ``Priority``) becomes the broker's message priority
        where the broker has them."""

    def send_branch(self, function_id: str, run_id: str, step_key: str) -> None:
        """Send the task that runs one ``ctx.step.parallel`` branch of a run."""


class Transport(Publisher, Protocol):
    """:class:`Publisher` plus what only the broker side can do."""

    def batch(self) -> AbstractContextManager[Publisher]:
        """A publisher that reuses one broker connection for many messages."""

    def inline(self) -> bool:
        """True when publishing runs the task at once, in this process (Celery's eager mode):
        then everything must be published, not left to a timer poller."""

    def send_task(self, task: Any, args: Sequence[Any], kwargs: dict[str, Any], *,
                  task_id: str, reply_to: tuple[str, str, str]) -> None:
        """Send a user's Celery task for ``ctx.step.run_task``; when it ends, its result (or
        error) resolves step ``reply_to = (run_id, function_id, step_key)``."""

    def task_result(self, task_id: str) -> dict[str, Any] | None:
        """A ``run_task`` task's outcome from the result backend, if it has one:
        ``{"status": "completed", "result": ...}`` or ``{"status": "failed", "error": ...}``."""
