"""Named crash points: kill the process exactly between two store writes, from a test.

The engine calls :func:`crash_point` at the moments that matter for durability (before and
after a checkpoint, after a run's final write and before its notifications, between routing
stages, ...). Disarmed, a crash point costs one global lookup. A test arms one:

- in a worker subprocess, through the environment: ``CELERY_STEPS_CRASH_AT=<point>`` or
  ``<point>=<label>`` (the label narrows it, e.g. to one step id or function id), and
  optionally ``CELERY_STEPS_CRASH_ONCE=<path>``: crash only while that file does not exist
  (it is created just before the crash), so the restarted process runs on;
- in process, with :func:`arm` and an action (raise an exception, record the moment, ...).

The default action is ``SIGKILL`` to the current process: nothing runs after it, no
``finally``, no ``atexit``, exactly like an out-of-memory kill.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

POINTS = frozenset({
    "accept.after_put_event",      # an event is stored, its routing not yet published
    "route.after_start_runs",      # routing created its runs, waiters not yet resumed
    "route.before_complete",       # routing did everything but record that it did
    "cron.after_put_event",        # a cron tick's event is stored, its run not yet created
    "step.before_checkpoint",      # a step's function returned, its result not yet stored
    "step.after_checkpoint",       # a step's result is stored, the handler not yet resumed
    "run.after_suspend",           # a run's suspension is stored, the task not yet returned
    "run.after_finish",            # a run's end is stored, its notifications not yet sent
    "run_task.after_publish",      # a Celery task is published, the step not yet marked sent
    "invoke.after_start_child",    # an invoked child run exists, the step not yet marked sent
})

Action = Callable[[str, str], None]
_armed: dict[str, tuple[str | None, Action]] | None = None


def _kill(point: str, label: str) -> None:
    flag = os.environ.get("CELERY_STEPS_CRASH_ONCE")
    if flag:
        path = Path(flag)
        if path.exists():
            return
        path.write_text(f"{point}={label}\n")
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str, *, label: str | None = None, action: Action = _kill) -> None:
    """Make ``crash_point(point)`` (with that label, if given) run ``action``."""
    global _armed
    if point not in POINTS:
        raise ValueError(f"unknown crash point {point!r}; known: {', '.join(sorted(POINTS))}")
    _armed = {**(_armed or {}), point: (label, action)}


def disarm() -> None:
    """Disarm every crash point."""
    global _armed
    _armed = None


def crash_point(point: str, label: str = "") -> None:
    """Run the armed action if ``point`` (and ``label``, when the arming named one) is armed."""
    if _armed is None:
        return
    armed = _armed.get(point)
    if armed is not None and armed[0] in (None, label):
        armed[1](point, label)


def _from_environment() -> None:
    spec = os.environ.get("CELERY_STEPS_CRASH_AT", "").strip()
    if spec:
        point, _, label = spec.partition("=")
        arm(point, label=label or None)


_from_environment()
