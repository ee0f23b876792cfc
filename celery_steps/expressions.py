"""CEL expressions: ``if_exp``, ``match``, keys and priorities.

Expressions are compiled once (when a function is declared) with the ``cel`` package, a Rust
CEL implementation, and evaluated against plain JSON-like values. Python ``eval``/``exec`` is
never used. Size and nesting are limited before anything is compiled; comprehensions may nest
at most :data:`MAX_COMPREHENSION_NESTING` deep, and an evaluation whose estimated cost over its
inputs is above :data:`MAX_EVALUATION_COST` is refused before it starts
(:mod:`celery_steps.expression_cost`), as ``cel`` has no budget of its own.
"""

from __future__ import annotations

import enum
import json
import logging
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

import cel

from celery_steps.errors import CeleryStepsError, ConfigurationError
from celery_steps.expression_cost import profile, skip_string
from celery_steps.jsonshape import count_values, longest_container

__all__ = [
    "MAX_COMPREHENSION_NESTING",
    "MAX_EVALUATION_COST",
    "MAX_EXPRESSION_LENGTH",
    "MAX_NESTING",
    "MISSING",
    "Expression",
    "ExpressionCostError",
    "ExpressionEvalError",
    "lookup_path",
    "match_key",
    "match_to_expression",
]

MAX_EXPRESSION_LENGTH: Final = 2048
MAX_NESTING: Final = 32
MAX_COMPREHENSION_NESTING: Final = 3
"""Comprehension macros (all, exists, exists_one, map, filter) nested deeper are refused."""
MAX_EVALUATION_COST: Final = 10_000_000
"""Budget for an evaluation's estimated cost, ``characters * input size ** degree`` (see
:mod:`celery_steps.expression_cost`): one that could cost more is refused before it starts."""

log = logging.getLogger("celery_steps.expressions")

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Words CEL's grammar refuses after a dot (``event.data.in`` does not parse).
_RESERVED_FIELDS: Final = frozenset({"true", "false", "null", "in"})
_OPENERS: Final = {"(": ")", "[": "]", "{": "}"}
# Names CEL reports as variables that are not: type names and function namespaces.
_BUILTIN_NAMES: Final = frozenset(
    {"bool", "bytes", "double", "dyn", "int", "list", "map", "null_type", "string", "type"}
    | {"uint", "cel", "optional", "google", "math", "strings", "base64", "sets", "lists"}
)
# Variables bound by macros: ``x.exists(v, ...)``, ``x.all(k, v, ...)``, ``cel.bind(v, ...)``.
_BOUND = re.compile(r"\.\s*[A-Za-z_]\w*\s*\(\s*([A-Za-z_]\w*)\s*,(?:\s*([A-Za-z_]\w*)\s*,)?")


class ExpressionEvalError(CeleryStepsError):
    """An expression failed while being evaluated (missing field, wrong types, ...)."""


class ExpressionCostError(ExpressionEvalError):
    """An expression was not evaluated: over these inputs it could cost more than
    :data:`MAX_EVALUATION_COST`."""


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing.MISSING
"""Returned by :func:`lookup_path` when the path does not exist in the document."""


def _nesting_depth(source: str) -> int:
    """Deepest nesting of (), [] and {} outside string literals."""
    depth = deepest = 0
    i = 0
    while i < len(source):
        char = source[i]
        if char in "'\"":
            i = skip_string(source, i)
            continue
        if char in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth = max(0, depth - 1)
        i += 1
    return deepest


class Expression:
    """A compiled CEL expression over named variables (``event`` and, for waits, ``async``).

    ``async`` is a Python keyword: pass it as ``expr.matches(event=e, **{"async": a})`` or
    with the alias ``async_=a``.
    """

    __slots__ = ("_budget", "_program", "source", "variables", "what")

    def __init__(
        self,
        source: str,
        *,
        variables: tuple[str, ...] = ("event",),
        what: str = "expression",
    ) -> None:
        if not isinstance(source, str):
            raise ConfigurationError(
                f"invalid {what}: expected a CEL expression string, got "
                f"{type(source).__name__} {source!r}"
            )
        if not source.strip():
            raise ConfigurationError(
                f"invalid {what}: the expression is empty; write a CEL expression such as "
                "'event.data.amount > 100'"
            )
        if len(source) > MAX_EXPRESSION_LENGTH:
            raise ConfigurationError(
                f"invalid {what}: the expression is {len(source)} characters long, more than "
                f"the limit of {MAX_EXPRESSION_LENGTH}; shorten it"
            )
        depth = _nesting_depth(source)
        if depth > MAX_NESTING:
            raise ConfigurationError(
                f"invalid {what} {_short(source)}: brackets/parentheses nest {depth} deep, "
                f"more than the limit of {MAX_NESTING}; simplify the expression"
            )
        try:
            program = cel.compile(source)
        except Exception as exc:  # ValueError from the parser; be safe with anything else
            raise ConfigurationError(
                f"invalid {what} {_short(source)}: {_parse_error(source, exc)}; "
                "fix the CEL syntax (see https://github.com/google/cel-spec)"
            ) from exc
        unknown = _unknown_variables(source, program, variables)
        if unknown:
            allowed = " and ".join(variables) or "no variables"
            raise ConfigurationError(
                f"invalid {what} {_short(source)}: unknown variable {unknown[0]!r}; "
                f"this expression can use {allowed} (e.g. 'event.data.amount > 100')"
            )
        cost = profile(source)
        if cost.nesting > MAX_COMPREHENSION_NESTING:
            raise ConfigurationError(
                f"invalid {what} {_short(source)}: comprehensions (all, exists, exists_one, "
                f"map, filter) nest {cost.nesting} deep, more than the limit of "
                f"{MAX_COMPREHENSION_NESTING}; do such checks in a step instead"
            )
        self.source: str = source
        self.variables: tuple[str, ...] = tuple(variables)
        self.what: str = what
        self._program: Any = program
        # Within MAX_EVALUATION_COST: the longest list or map, or the number of values, the
        # inputs may have (either suffices); None when the cost is linear in the input.
        self._budget: tuple[int, int] | None = None if cost.values_degree == 0 else (
            _largest_size(len(source), cost.length_degree),
            _largest_size(len(source), cost.values_degree))

    def __repr__(self) -> str:
        return f"Expression({self.source!r}, variables={self.variables!r})"

    def evaluate(self, **values: Any) -> Any:
        """Evaluate with the given variables; raises :class:`ExpressionEvalError` on failure."""
        context = {("async" if name == "async_" else name): value for name, value in values.items()}
        if self._budget is not None:
            self._check_cost(context.values(), *self._budget)
        try:
            return self._program.execute(context)
        except Exception as exc:  # KeyError, TypeError, ValueError, RuntimeError, ...
            raise ExpressionEvalError(
                f"{self.what} {_short(self.source)} failed: {type(exc).__name__}: "
                f"{_first_line(exc)}"
            ) from exc

    def _check_cost(self, inputs: Any, max_length: int, max_values: int) -> None:
        if count_values(inputs, limit=max_values) <= max_values:
            return
        if longest_container(inputs, limit=max_length) <= max_length:
            return
        raise ExpressionCostError(
            f"{self.what} {_short(self.source)} was not evaluated: its input has a list or map "
            f"longer than {max_length} and more than {max_values} values, and over them this "
            f"expression's comprehensions could cost more than the budget of "
            f"{MAX_EVALUATION_COST:,} (MAX_EVALUATION_COST, see docs/limits.md); iterate over "
            "smaller lists, or do this check in a step"
        )

    def matches(self, **values: Any) -> bool:
        """True only when the expression evaluates to exactly ``True``; errors give False."""
        try:
            return self.evaluate(**values) is True
        except ExpressionEvalError as exc:
            _log_failure(exc)
            return False

    def key(self, **values: Any) -> str | None:
        """The result as a string usable as a key; None when evaluation fails.

        Strings are returned as they are; other values as compact JSON with sorted keys
        (timestamps as ISO-8601, durations as seconds, bytes as latin-1 text).
        """
        try:
            result = self.evaluate(**values)
        except ExpressionEvalError as exc:
            _log_failure(exc)
            return None
        if isinstance(result, str):
            return result
        try:
            return json.dumps(result, sort_keys=True, separators=(",", ":"), default=_to_json)
        except (TypeError, ValueError):
            return None


def _largest_size(length: int, degree: int) -> int:
    """The largest input size ``n`` with ``length * n ** degree`` within the budget."""
    return max(1, int((MAX_EVALUATION_COST / length) ** (1 / degree)))


def _log_failure(exc: ExpressionEvalError) -> None:
    """Over budget is an operator's problem (warning); a missing field is routine (debug)."""
    if isinstance(exc, ExpressionCostError):
        log.warning("%s", exc)
    else:
        log.debug("%s", exc)


def _to_json(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.decode("latin-1")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _unknown_variables(source: str, program: Any, variables: tuple[str, ...]) -> list[str]:
    """Top-level names the expression reads that are not among ``variables``."""
    try:
        referenced = [str(name) for name in program.variables()]
    except Exception:  # an older ``cel`` without introspection: evaluation will tell
        return []
    bound = {name for match in _BOUND.finditer(source) for name in match.groups() if name}
    allowed = set(variables) | bound | _BUILTIN_NAMES
    return sorted(name for name in referenced if name not in allowed)


def _parse_error(source: str, exc: BaseException) -> str:
    text = str(exc)
    prefix = f"Failed to parse expression '{source}': "
    if text.startswith(prefix):
        text = text[len(prefix) :]
    lines = text.strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return f"no such key {exc.args[0]!r}"
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _short(source: str, limit: int = 120) -> str:
    return repr(source if len(source) <= limit else source[:limit] + "...")


def _split_path(path: object, what: str) -> list[str]:
    if not isinstance(path, str) or not path:
        raise ConfigurationError(
            f"invalid {what} {path!r}: expected a dot-separated field path such as 'data.order_id'"
        )
    parts = path.split(".")
    for part in parts:
        if not _IDENTIFIER.fullmatch(part):
            raise ConfigurationError(
                f"invalid {what} {path!r}: {part!r} is not a field name; use dot-separated "
                "identifiers (letters, digits, '_', not starting with a digit) such as "
                "'data.order_id'"
            )
    return parts


def match_to_expression(match: str) -> str:
    """Turn ``match="data.order_id"`` into ``event.data.order_id == async.data.order_id``."""
    parts = _split_path(match, "match")
    if parts[0] in ("event", "async"):
        raise ConfigurationError(
            f"invalid match {match!r}: the path is relative to the events; drop the "
            f"{parts[0]!r} prefix, e.g. match={'.'.join(parts[1:]) or 'data.order_id'!r}"
        )
    reserved = [part for part in parts if part in _RESERVED_FIELDS]
    if reserved:
        raise ConfigurationError(
            f"invalid match {match!r}: {reserved[0]!r} is a reserved word in CEL; use "
            f"if_exp with indexing instead, e.g. event.data[{reserved[0]!r}] == "
            f"async.data[{reserved[0]!r}]"
        )
    return f"event.{match} == async.{match}"


def lookup_path(document: Mapping[str, Any], path: str) -> Any:
    """The value at dotted ``path`` in ``document``, or :data:`MISSING` if absent."""
    current: Any = document
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return MISSING
        current = current[part]
    return current


def _canonical(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def match_key_at(document: Mapping[str, Any], path: str) -> str | None:
    """The index key of the value at ``path``, or None when the document lacks it
    (a wait or cancel_on keyed on a missing value can never match)."""
    value = lookup_path(document, path)
    return None if value is MISSING else match_key(value)


def match_key(value: Any) -> str:
    """Canonical string of a matched value, for indexing waiters (``7`` and ``"7"`` differ).

    Integral floats are written as integers (``7.0`` gives ``"7"``), as CEL's ``7 == 7.0``
    is true.
    """
    return json.dumps(_canonical(value), sort_keys=True, separators=(",", ":"))
