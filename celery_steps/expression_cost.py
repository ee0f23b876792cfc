"""How expensive a CEL expression can get, read from its source.

The ``cel`` package evaluates in Rust while holding the GIL and has no cost limit, no
iteration limit and no AST access, so the bound is computed here from the source text and
checked against the size of the inputs before each evaluation.

Comprehension macros (``all``, ``exists``, ``exists_one``, ``map``, ``filter``) run their body
once per element of a list or map, and nested they multiply: ``a.all(x, b.exists(y, y == x))``
runs ``len(a) * len(b)`` times. ``map`` and ``filter`` also copy the list they build at each
element, so one of them alone costs ``len(a) ** 2``. ``x in list`` scans the list.

An expression of ``L`` characters costs at most about ``L * n ** d`` steps, bounded two ways
(the smaller bound counts):

* by the *length* ``n`` of the longest list or map in the inputs: each comprehension level
  adds one to ``d``, ``map``/``filter`` one more, and a comprehension body's ``x in list``
  one more (unless the list is a literal such as ``['a', 'b']``);
* by the number of *values* ``n`` in the inputs (containers and scalars, at any depth): the
  same, except that a comprehension over a part of the element of the one around it
  (``orders.all(o, o.lines.all(l, ...))``) adds nothing, as all the ``o.lines`` together hold
  no more values than the input does; nor does ``x in o.tags`` there.

Degree 0 (no comprehension) costs at most about ``L`` times the input size: one reading.
Unmodelled: comparing or concatenating whole lists inside a comprehension
(``x.tags == event.data.tags``) and string functions on long strings add a factor of the
input size per evaluation of the body; literal lists iterated over are bounded by ``L``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["COMPREHENSION_MACROS", "CostProfile", "mask_strings", "profile", "skip_string"]

COMPREHENSION_MACROS: Final = frozenset(
    {"all", "exists", "exists_one", "existsOne", "map", "filter",
     # not in the current ``cel`` release, counted should a later one add them
     "transformList", "transformMap", "transformMapEntry", "sortBy"}
)
_BUILDERS: Final = frozenset({"map", "filter", "transformList", "transformMap",
                              "transformMapEntry", "sortBy"})
_MACRO_CALL = re.compile(
    r"\.\s*(" + "|".join(sorted(COMPREHENSION_MACROS, key=len, reverse=True)) + r")\s*\("
)
_BOUND_VARIABLE = re.compile(r"\s*([A-Za-z_]\w*)\s*,")
_LEADING_NAME = re.compile(r"\s*([A-Za-z_]\w*)")
_IN = re.compile(r"(?<![\w.])in(?!\w)")
_WORD = re.compile(r"\w")
_OPENERS: Final = {"(": ")", "[": "]", "{": "}"}


def skip_string(source: str, start: int) -> int:
    """Index just past the string literal whose opening quote is at ``start``."""
    raw = start > 0 and source[start - 1] in "rR"
    quote = source[start]
    delimiter = quote * 3 if source.startswith(quote * 3, start) else quote
    i = start + len(delimiter)
    while i < len(source):
        if source[i] == "\\" and not raw:
            i += 2
            continue
        if source.startswith(delimiter, i):
            return i + len(delimiter)
        i += 1
    return len(source)  # unterminated: the parser reports it


def mask_strings(source: str) -> str:
    """``source`` with the inside of every string literal blanked (same length), so brackets,
    dots and words in strings are not mistaken for code."""
    parts: list[str] = []
    i = start = 0
    while i < len(source):
        if source[i] in "'\"":
            end = skip_string(source, i)
            quote = source[i]
            parts.append(source[start:i] + quote + " " * (end - i - 2) + quote)
            i = start = end
            continue
        i += 1
    parts.append(source[start:])
    return "".join(parts)


def _brackets(masked: str) -> dict[int, int]:
    """Each bracket's position mapped to its partner's (both ways); unbalanced ones unmapped."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for i, char in enumerate(masked):
        if char in _OPENERS:
            stack.append(i)
        elif char in ")]}" and stack and _OPENERS[masked[stack[-1]]] == char:
            opened = stack.pop()
            pairs[opened], pairs[i] = i, opened
    return pairs


def _path_root(masked: str, end: int, pairs: dict[int, int]) -> str | None:
    """The variable a plain path (``o.lines``, ``o['lines'][0]``) ending just before ``end``
    starts from; None when it is anything else (a call result, a literal, parentheses)."""
    i = end - 1
    while True:
        while i >= 0 and masked[i].isspace():
            i -= 1
        if i < 0:
            return None
        if masked[i] == "]" and i in pairs:
            before = pairs[i] - 1
            while before >= 0 and masked[before].isspace():
                before -= 1
            if before < 0 or not (_WORD.match(masked[before]) or masked[before] == "]"):
                return None  # a list literal, not an index
            i = before
            continue
        if not _WORD.match(masked[i]):
            return None
        stop = i
        while i >= 0 and _WORD.match(masked[i]):
            i -= 1
        word = masked[i + 1: stop + 1]
        dot = i
        while dot >= 0 and masked[dot].isspace():
            dot -= 1
        if dot >= 0 and masked[dot] == ".":
            i = dot - 1
            continue
        return None if word[0].isdigit() else word


def _path_start(masked: str, start: int) -> str | None:
    """The variable the path starting at ``start`` begins with, if it begins with one."""
    found = _LEADING_NAME.match(masked, start)
    return found.group(1) if found else None


@dataclass(frozen=True)
class _Comprehension:
    opened: int  # position of its "("
    closed: int  # position of its ")"
    variable: str | None
    root: str | None  # the variable its range is a plain path from, if it is one
    builds_list: bool  # map, filter: the list built is copied at each element


@dataclass(frozen=True)
class CostProfile:
    """What the source says about an expression's cost (see the module docstring)."""

    nesting: int
    """How deeply comprehension macros nest in the text (0: none)."""
    length_degree: int
    """The exponent of the longest input list or map's length in the cost bound."""
    values_degree: int
    """The exponent of the number of input values in the cost bound."""


def profile(source: str) -> CostProfile:
    """The comprehension nesting and cost degree of a CEL expression."""
    masked = mask_strings(source)
    pairs = _brackets(masked)
    found: list[_Comprehension] = []
    for call in _MACRO_CALL.finditer(masked):
        opened = call.end() - 1
        closed = pairs.get(opened)
        if closed is None:
            continue  # unbalanced: the parser refuses it
        bound = _BOUND_VARIABLE.match(masked, opened + 1)
        found.append(_Comprehension(opened, closed, bound.group(1) if bound else None,
                                    _path_root(masked, call.start(), pairs),
                                    call.group(1) in _BUILDERS))

    def enclosing(position: int) -> int | None:
        inner = None
        for index, c in enumerate(found):
            if c.opened < position < c.closed and (
                inner is None or c.opened > found[inner].opened
            ):
                inner = index
        return inner

    def element_is_input_part(index: int) -> bool:
        """Whether the elements the comprehension visits are parts of the input (its range
        is a plain path from the input or from such an element), not computed values."""
        c = found[index]
        while True:
            if c.root is None:
                return False
            outer = enclosing(c.opened)
            while outer is not None and found[outer].variable != c.root:
                outer = enclosing(found[outer].opened)
            if outer is None:
                return True  # a path from ``event``/``async``
            c = found[outer]

    def within(parent: int | None, root: str | None) -> bool:
        """Whether a range from ``root`` is a part of the element ``parent`` visits."""
        return (parent is not None and root is not None and root == found[parent].variable
                and element_is_input_part(parent))

    nesting: list[int] = []
    by_length: list[int] = []
    by_values: list[int] = []
    for c in found:  # in source order: parents come before children
        parent = enclosing(c.opened)
        extra = 1 if c.builds_list else 0
        if parent is None:
            nesting.append(1)
            by_length.append(1 + extra)
            by_values.append(1 + extra)
            continue
        nesting.append(nesting[parent] + 1)
        by_length.append(by_length[parent] + 1 + extra)
        by_values.append(by_values[parent] + (0 if within(parent, c.root) else 1) + extra)
    length_degree = max(by_length, default=0)
    values_degree = max(by_values, default=0)
    for member in _IN.finditer(masked):
        around = enclosing(member.start())
        if around is None:
            continue  # one scan of a list, outside any comprehension: linear
        operand = member.end()
        while operand < len(masked) and masked[operand].isspace():
            operand += 1
        if masked[operand: operand + 1] in ("[", "{"):
            continue  # a literal: no longer than the expression
        length_degree = max(length_degree, by_length[around] + 1)
        if not within(around, _path_start(masked, operand)):
            values_degree = max(values_degree, by_values[around] + 1)
    return CostProfile(max(nesting, default=0), length_degree, values_degree)
