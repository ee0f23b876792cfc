"""The :class:`Context` a handler receives."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celery_steps.events import Event

if TYPE_CHECKING:
    from celery_steps.engine.steps import StepTools


class ReplayAwareLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger that stays quiet while the handler replays steps it already passed."""

    def __init__(self, logger: logging.Logger, step: StepTools, run_id: str) -> None:
        super().__init__(logger, {"run_id": run_id})
        self._step = step

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if not self._step.replaying:
            super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return f"[run {self.extra['run_id'] if self.extra else ''}] {msg}", kwargs


@dataclass
class Context:
    """What a handler gets: the event(s), the step tools and the run's identity."""

    event: Event
    events: list[Event]
    step: StepTools
    run_id: str
    function_id: str
    logger: logging.LoggerAdapter = field(repr=False)  # type: ignore[type-arg]

    @property
    def attempt(self) -> int:
        """0 on the first attempt of the current step (or of the handler body)."""
        return self.step.attempt
