"""JSON only: encode step results and run outputs, or fail with SerializationError."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from celery_steps.errors import SerializationError
from celery_steps.jsonshape import nesting_depth, too_deep


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def _dumped(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def encode(value: Any, *, what: str, max_depth: int) -> str:
    """Encode ``value`` as compact JSON; pydantic models are dumped in JSON mode.

    Values nested deeper than ``max_depth`` (setting steps_json_max_depth) are refused.
    """
    try:
        depth = nesting_depth(value, limit=max_depth, expand=_dumped)
    except (TypeError, ValueError, RecursionError):  # a model that cannot dump: dumps says why
        depth = 0
    if depth > max_depth:
        raise SerializationError(too_deep(what, max_depth))
    try:
        return json.dumps(value, default=_default, allow_nan=False, separators=(",", ":"))
    except RecursionError:
        raise SerializationError(too_deep(what, max_depth)) from None
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"{what} is not JSON-serializable ({exc}): return dicts, lists, strings, numbers, "
            "booleans, None or a pydantic model (convert sets to lists, Decimals to str)"
        ) from None


def round_trip(value: Any, *, what: str, max_depth: int) -> tuple[Any, str]:
    """The JSON value a replay will see, and its encoding: first runs and replays agree."""
    encoded = encode(value, what=what, max_depth=max_depth)
    return json.loads(encoded), encoded
