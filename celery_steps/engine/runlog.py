"""``ctx.logger``: a logger that stays quiet while the handler replays finished steps."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any, Protocol


class Replaying(Protocol):
    @property
    def replaying(self) -> bool: ...


class ReplayAwareLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger that stays quiet while the handler replays steps it already passed."""

    def __init__(self, logger: logging.Logger, step: Replaying, run_id: str) -> None:
        super().__init__(logger, {"run_id": run_id})
        self._step = step

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if not self._step.replaying:
            super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return f"[run {self.extra['run_id'] if self.extra else ''}] {msg}", kwargs
