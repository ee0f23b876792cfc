"""A worker remote-control command for ``celery steps doctor``: the worker's wall clock.

``app.control.broadcast("steps_clock", reply=True)`` gets ``{"time": <unix seconds>}`` from
every worker of an app with celery-steps installed, so the doctor can measure clock skew.
"""

from __future__ import annotations

import time
from typing import Any

from celery.worker.control import control_command

CLOCK_COMMAND = "steps_clock"


@control_command(name=CLOCK_COMMAND)  # type: ignore[untyped-decorator]
def steps_clock(state: Any, **kwargs: Any) -> dict[str, float]:
    """The worker's wall clock, in Unix seconds (for clock-skew checks)."""
    return {"time": time.time()}
