"""JSON only: encode step results and run outputs, or fail with SerializationError."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from celery_steps.errors import SerializationError


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def encode(value: Any, *, what: str) -> str:
    """Encode ``value`` as compact JSON; pydantic models are dumped in JSON mode."""
    try:
        return json.dumps(value, default=_default, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(
            f"{what} is not JSON-serializable ({exc}): return dicts, lists, strings, numbers, "
            "booleans, None or a pydantic model (convert sets to lists, Decimals to str)"
        ) from None


def round_trip(value: Any, *, what: str) -> tuple[Any, str]:
    """The JSON value a replay will see, and its encoding: first runs and replays agree."""
    encoded = encode(value, what=what)
    return json.loads(encoded), encoded
