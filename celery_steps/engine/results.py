"""Typed step results: a step whose function declares a pydantic model or a dataclass as its
return type gets that type back, rebuilt from the stored JSON, on first runs and replays alike.

Only plain functions are inspected (a lambda, a ``functools.partial`` or a builtin has no return
annotation to honour). The return annotation is resolved once per function object with
``typing.get_type_hints`` and kept in a weak cache, and its pydantic ``TypeAdapter`` is built
once per type: an unannotated function costs one dictionary look-up per step.
"""

from __future__ import annotations

import dataclasses
import logging
import types
from functools import lru_cache
from typing import Any, Union, get_args, get_origin, get_type_hints
from weakref import WeakKeyDictionary

from pydantic import BaseModel, TypeAdapter, ValidationError

from celery_steps.errors import SerializationError

__all__ = ["ResultType", "result_type"]

log = logging.getLogger("celery_steps.steps")
_UNIONS = (Union, types.UnionType)
_MAX_ERRORS = 3


class ResultType:
    """The declared return type of a step function, and how to dump and rebuild its values."""

    def __init__(self, hint: Any, adapter: TypeAdapter[Any]) -> None:
        self.hint = hint
        self.adapter = adapter
        self.name = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")

    def dump(self, value: Any, *, step: str) -> Any:
        """``value`` (what the function returned) as JSON-ready data; SerializationError if it
        is not of the declared type."""
        typed = self._validate(value, step=step, what="returned a value that")
        return self.adapter.dump_python(typed, mode="json")

    def load(self, value: Any, *, step: str) -> Any:
        """The stored JSON ``value`` rebuilt as the declared type."""
        return self._validate(value, step=step, what="has a stored result that")

    def _validate(self, value: Any, *, step: str, what: str) -> Any:
        try:
            return self.adapter.validate_python(value)
        except ValidationError as exc:
            # field paths and messages only: the input may hold secrets
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}"
                for error in exc.errors(include_input=False, include_url=False)[:_MAX_ERRORS]
            )
            raise SerializationError(
                f"step {step!r} {what} does not match its function's return type "
                f"{self.name} ({problems}): return a {self.name}, or change the annotation"
            ) from None


_BY_FUNCTION: WeakKeyDictionary[types.FunctionType, ResultType | None] = WeakKeyDictionary()


def result_type(fn: Any) -> ResultType | None:
    """The rebuildable return type of the step function ``fn``, or None (results stay JSON)."""
    target = getattr(fn, "__func__", fn)  # a bound method: its function
    if type(target) is not types.FunctionType:
        return None
    annotations = target.__annotations__
    if not annotations or "return" not in annotations:
        return None
    try:
        return _BY_FUNCTION[target]
    except KeyError:
        pass
    found = _resolve(target)
    _BY_FUNCTION[target] = found
    return found


def _resolve(fn: types.FunctionType) -> ResultType | None:
    try:
        hint = get_type_hints(fn).get("return")
    except Exception as exc:  # e.g. a name imported only under TYPE_CHECKING
        log.debug("return type of %s not resolved (%s): its results stay JSON",
                  fn.__qualname__, exc)
        return None
    if not _rebuildable(hint):
        return None
    adapter = _adapter(hint)
    return None if adapter is None else ResultType(hint, adapter)


def _rebuildable(hint: Any) -> bool:
    """A model or dataclass, or a list, Optional or union of them."""
    if isinstance(hint, type):
        return issubclass(hint, BaseModel) or dataclasses.is_dataclass(hint)
    if get_origin(hint) in (list, *_UNIONS):
        return any(_rebuildable(arg) for arg in get_args(hint))
    return False


@lru_cache(maxsize=256)
def _adapter(hint: Any) -> TypeAdapter[Any] | None:
    try:
        return TypeAdapter(hint)
    except Exception as exc:  # a type pydantic cannot build a schema for
        log.warning("results of type %r stay JSON: pydantic cannot validate it (%s)", hint, exc)
        return None
