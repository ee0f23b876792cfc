"""The shape of JSON-like values: how deeply they nest and how many values they hold.

Both walks are iterative (an explicit stack, no recursion), so a value nested far deeper than
Python's recursion limit is measured, not crashed on. Dicts, lists and tuples are containers;
everything else is a leaf, unless ``expand`` turns it into a container first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

__all__ = ["DEFAULT_MAX_DEPTH", "count_values", "longest_container", "nesting_depth", "too_deep"]

DEFAULT_MAX_DEPTH: Final = 64
"""Default of the ``steps_json_max_depth`` setting (see docs/limits.md for why 64)."""

_CONTAINERS: Final = (dict, list, tuple)
_LEAVES: Final = (str, int, float, bool, type(None))


def _children(value: Any) -> Iterable[Any]:
    return value.values() if isinstance(value, dict) else value  # type: ignore[no-any-return]


def nesting_depth(value: Any, *, limit: int | None = None,
                  expand: Callable[[Any], Any] | None = None) -> int:
    """How many containers nest in ``value``: 0 for a scalar, 1 for ``[1]``, 2 for ``{"a": []}``.

    With ``limit``, the walk stops as soon as the depth passes it (and returns that depth), so
    checking a huge value against a small limit is cheap. ``expand`` is called on values that
    are neither containers nor JSON scalars (e.g. pydantic models) and its result is measured.
    """
    if expand is not None and not isinstance(value, (*_CONTAINERS, *_LEAVES)):
        value = expand(value)
    if not isinstance(value, _CONTAINERS):
        return 0
    deepest = 1
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if limit is not None and deepest > limit:
                return deepest
        for child in _children(node):
            if isinstance(child, _CONTAINERS):
                stack.append((child, depth + 1))
            elif expand is not None and not isinstance(child, _LEAVES):
                expanded = expand(child)
                if isinstance(expanded, _CONTAINERS):
                    stack.append((expanded, depth + 1))
    return deepest


def count_values(values: Iterable[Any], *, limit: int | None = None) -> int:
    """How many values (containers and scalars, keys not counted) ``values`` hold in all.

    With ``limit``, the count stops as soon as it passes it.
    """
    total = 0
    stack = list(values)
    while stack:
        node = stack.pop()
        total += 1
        if isinstance(node, _CONTAINERS):
            stack.extend(_children(node))
        if limit is not None and total > limit:
            return total
    return total


def longest_container(values: Iterable[Any], *, limit: int | None = None) -> int:
    """The length of the longest dict, list or tuple anywhere in ``values`` (0 if none).

    With ``limit``, the walk stops at the first container longer than it.
    """
    longest = 0
    stack = [v for v in values if isinstance(v, _CONTAINERS)]
    while stack:
        node = stack.pop()
        if len(node) > longest:
            longest = len(node)
            if limit is not None and longest > limit:
                return longest
        stack.extend(c for c in _children(node) if isinstance(c, _CONTAINERS))
    return longest


def too_deep(what: str, limit: int) -> str:
    """The message for a value nested deeper than ``limit``, naming the setting."""
    return (
        f"{what} nests more than {limit} levels deep, over the limit of the setting "
        "steps_json_max_depth: flatten the data (or raise the setting)"
    )
