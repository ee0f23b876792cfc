"""Waiter registrations (``wait_for_event`` and ``cancel_on``), built so that routing can
match an event against them without loading their runs.

A waiter's condition (``if_exp``) reads the run's triggering event as ``event``. What it
reads of it is kept with the waiter (:attr:`Waiter.trigger`, a pruned copy: the paths the
expression reads, see :func:`celery_steps.expression_ast.shape`), so routing evaluates the
condition from the waiter alone. A condition that requires ``async.A == event.B`` (alone or
as a top-level ``&&`` conjunct) and has no ``match`` is also indexed like ``match``: under
path ``A`` with the value of ``event.B``, so an event whose ``A`` differs never even fetches
the waiter. The index is used only where it finds every event CEL's ``==`` could accept:
strings, booleans, null and numbers within 2**53 (see :func:`indexable`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any, Final

from celery_steps.expression_ast import prune, shape
from celery_steps.expressions import MISSING, lookup_path, match_key, match_key_at
from celery_steps.store.base import Waiter

__all__ = ["WAITER_TRIGGER_MAX_BYTES", "build_waiter", "indexable"]

WAITER_TRIGGER_MAX_BYTES: Final = 4096
"""The largest pruned trigger (compact JSON) kept with a waiter. A condition that reads more
of its trigger is evaluated by loading the run, as before this was stored."""

# Past 2**53 CEL compares an int with a double as doubles (2**53 + 1 == 2.0**53 is true),
# where the match keys of the two differ; below it, equal numbers have equal keys.
_EXACT_NUMBERS: Final = 2**53

log = logging.getLogger("celery_steps.waiters")
_warned: set[tuple[str, str]] = set()


def indexable(value: Any) -> bool:
    """Whether every value CEL's ``==`` finds equal to ``value`` has its :func:`match_key`:
    a string, a boolean, null, or a finite number of magnitude below 2**53."""
    if value is None or isinstance(value, (str, bool)):
        return True
    if isinstance(value, int):
        return abs(value) < _EXACT_NUMBERS
    if isinstance(value, float):
        return math.isfinite(value) and abs(value) < _EXACT_NUMBERS
    return False


def build_waiter(event_name: str, run_id: str, function_id: str, step_key: str,
                 trigger: Mapping[str, Any], *, match: str | None = None,
                 condition: str | None = None, timeout_ms: int | None = None,
                 registered_at: int = 0, trigger_final: bool = True) -> Waiter:
    """A waiter on ``event_name`` for a run whose triggering event is ``trigger``.

    ``trigger_final`` is False while the trigger may still change (a debounced run still
    collecting events): then nothing is derived from it beyond ``match`` (as before), and
    routing loads the run to evaluate ``condition``.
    """
    match_path = match
    wanted = match_key_at(trigger, match) if match else None
    kept: dict[str, Any] | None = None
    if condition and trigger_final:
        found = shape(condition)
        if match_path is None:
            for async_path, event_path in found.equalities:
                value = lookup_path(trigger, ".".join(event_path))
                if value is MISSING or indexable(value):
                    # a missing value fails the conjunct, so the condition is never true:
                    # keyed on None, the waiter is never found (as with ``match``)
                    match_path = ".".join(async_path)
                    wanted = None if value is MISSING else match_key(value)
                    break
        kept = _kept_trigger(trigger, found.event_reads, function_id, condition)
    return Waiter(event_name=event_name, run_id=run_id, function_id=function_id,
                  step_key=step_key, registered_at=registered_at, match_path=match_path,
                  match_key=wanted, condition=condition, timeout_ms=timeout_ms, trigger=kept)


def _kept_trigger(trigger: Mapping[str, Any], reads: tuple[tuple[str, ...], ...] | None,
                  function_id: str, condition: str) -> dict[str, Any] | None:
    """The pruned trigger as an independent copy, or None when it is too big to keep."""
    view = dict(trigger) if reads is None else prune(trigger, reads)
    text = json.dumps(view, separators=(",", ":"), ensure_ascii=False)
    size = len(text.encode())
    if size > WAITER_TRIGGER_MAX_BYTES:
        if (function_id, condition) not in _warned:
            _warned.add((function_id, condition))
            log.warning(
                "function %r: the parts of the triggering event that the condition %r reads "
                "take %d bytes, more than the %d kept with a waiter; such a waiter is matched "
                "by loading its run (slower routing for every event of that name). Read "
                "smaller parts of the event (e.g. event.data.id rather than event.data)",
                function_id, condition[:120], size, WAITER_TRIGGER_MAX_BYTES)
        return None
    kept: dict[str, Any] = json.loads(text)
    return kept
