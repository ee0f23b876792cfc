"""The structure of a CEL expression: which parts of a variable it reads, which equalities it
requires.

The ``cel`` package evaluates expressions but gives no syntax tree, so this module parses
the source itself, with the grammar of the CEL specification
(https://github.com/google/cel-spec/blob/master/doc/langdef.md), into a small tree used only
to read the expression's shape; evaluation stays with ``cel``. Nothing is evaluated here.

What the parser does not know (message construction, optional syntax ``.?f`` and ``[?k]``
in lists and maps) it refuses with :class:`Unparsed`; callers then assume the worst (the
whole variable is read, nothing is required).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

__all__ = ["Node", "Shape", "Unparsed", "parse", "prune", "shape"]

Path = tuple[str, ...]

_RESERVED: Final = frozenset(
    {"as", "break", "const", "continue", "else", "for", "function", "if", "import", "let",
     "loop", "package", "namespace", "return", "var", "void", "while", "in"}
)
_LITERAL_WORDS: Final = frozenset({"true", "false", "null"})
_SPACE = re.compile(r"(?:[\t\n\f\r ]+|//[^\r\n]*)+")
_NUMBER = re.compile(
    r"0[xX][0-9a-fA-F]+[uU]?"
    r"|(?:[0-9]+\.[0-9]+|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    r"|[0-9]+[eE][+-]?[0-9]+"
    r"|[0-9]+[uU]?"
)
_STRING_START = re.compile(r"(?:[rR][bB]?|[bB][rR]?)?(?:'''|\"\"\"|'|\")")
_IDENT = re.compile(r"[_A-Za-z][_A-Za-z0-9]*")
_PUNCT = re.compile(r"==|!=|<=|>=|&&|\|\||[-+*/%!<>?:()\[\]{}.,]")
_RELATIONS: Final = frozenset({"<", "<=", ">=", ">", "==", "!=", "in"})


class Unparsed(Exception):
    """The source uses syntax this parser does not model (or is not CEL)."""


@dataclass(frozen=True)
class Node:
    """One node of the tree.

    ``kind`` is ``ident`` (``name``: the variable), ``select`` (``name``: the field,
    ``args[0]``: the operand; inside ``has()`` too, as it reads the same path), ``call``
    (``name``: the function or operator as CEL names it, ``_==_``, ``_&&_``, ``size``...; a
    method call's target is ``args[0]``), ``literal``, ``list`` or ``map`` (``args``: the
    elements, or the keys and values in turn).
    """

    kind: str
    name: str = ""
    args: tuple[Node, ...] = ()


@dataclass(frozen=True)
class _Token:
    kind: str  # "ident", "literal", "punct", "end"
    text: str


def _tokens(source: str) -> list[_Token]:
    out: list[_Token] = []
    i = 0
    while True:
        space = _SPACE.match(source, i)
        if space:
            i = space.end()
        if i >= len(source):
            out.append(_Token("end", ""))
            return out
        start = _STRING_START.match(source, i)
        if start:
            i = _skip_string(source, i, start.group())
            out.append(_Token("literal", "string"))
            continue
        number = _NUMBER.match(source, i)
        if number:
            i = number.end()
            out.append(_Token("literal", "number"))
            continue
        word = _IDENT.match(source, i)
        if word:
            i = word.end()
            text = word.group()
            out.append(_Token("literal" if text in _LITERAL_WORDS else "ident", text))
            continue
        punct = _PUNCT.match(source, i)
        if not punct:
            raise Unparsed(f"unexpected character {source[i]!r} at {i}")
        i = punct.end()
        out.append(_Token("punct", punct.group()))


def _skip_string(source: str, start: int, opening: str) -> int:
    """Index just past the string (or bytes) literal starting at ``start``."""
    prefix = opening.rstrip("'\"")
    quote = opening[len(prefix):]
    raw = "r" in prefix.lower()
    i = start + len(opening)
    while i < len(source):
        if source.startswith(quote, i):
            return i + len(quote)
        if len(quote) == 1 and source[i] in "\r\n":
            break
        i += 2 if source[i] == "\\" and not raw else 1
    raise Unparsed(f"unterminated string literal at {start}")


class _Parser:
    def __init__(self, source: str) -> None:
        self.tokens = _tokens(source)
        self.at = 0

    # -- token helpers ------------------------------------------------------------------
    def peek(self, offset: int = 0) -> _Token:
        return self.tokens[min(self.at + offset, len(self.tokens) - 1)]

    def accept(self, text: str) -> bool:
        token = self.peek()
        if token.kind == "punct" and token.text == text:
            self.at += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.accept(text):
            raise Unparsed(f"expected {text!r}, found {self.peek().text!r}")

    def ident(self) -> str:
        token = self.peek()
        if token.kind != "ident" or token.text in _RESERVED:
            raise Unparsed(f"expected a name, found {token.text!r}")
        self.at += 1
        return token.text

    # -- grammar ------------------------------------------------------------------------
    def parse(self) -> Node:
        node = self.expr()
        if self.peek().kind != "end":
            raise Unparsed(f"unexpected {self.peek().text!r}")
        return node

    def expr(self) -> Node:
        condition = self.binary(0)
        if not self.accept("?"):
            return condition
        then = self.binary(0)
        self.expect(":")
        return Node("call", "_?_:_", (condition, then, self.expr()))

    _LEVELS: Final = (("||",), ("&&",), tuple(_RELATIONS), ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int) -> Node:
        if level == len(self._LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while True:
            token = self.peek()
            operator = token.text if token.kind in ("punct", "ident") else ""
            if operator not in self._LEVELS[level]:
                return node
            self.at += 1
            name = "@in" if operator == "in" else f"_{operator}_"
            node = Node("call", name, (node, self.binary(level + 1)))

    def unary(self) -> Node:
        for operator in ("!", "-"):
            if self.accept(operator):
                return Node("call", f"{operator}_", (self.unary(),))
        return self.member()

    def member(self) -> Node:
        node = self.primary()
        while True:
            if self.accept("."):
                if self.peek().text == "?":
                    raise Unparsed("optional field selection")
                name = self.ident()
                if self.accept("("):
                    node = Node("call", name, (node, *self.exprs(")")))
                else:
                    node = Node("select", name, (node,))
            elif self.accept("["):
                if self.peek().text == "?":
                    raise Unparsed("optional index")
                index = self.expr()
                self.expect("]")
                node = Node("call", "_[_]", (node, index))
            elif self.peek().text == "{" and node.kind in ("ident", "select"):
                raise Unparsed("message construction")
            else:
                return node

    def primary(self) -> Node:
        token = self.peek()
        if token.kind == "literal":
            self.at += 1
            return Node("literal", token.text)
        if self.accept("("):
            node = self.expr()
            self.expect(")")
            return node
        if self.accept("["):
            return Node("list", "", self.exprs("]"))
        if self.accept("{"):
            return Node("map", "", self.entries())
        self.accept(".")  # a leading dot names the same variable, from the root scope
        name = self.ident()
        if self.accept("("):
            return Node("call", name, self.exprs(")"))
        return Node("ident", name)

    def exprs(self, closing: str) -> tuple[Node, ...]:
        items: list[Node] = []
        while not self.accept(closing):
            if self.peek().text == "?":
                raise Unparsed("optional entry")
            items.append(self.expr())
            if not self.accept(","):
                self.expect(closing)
                break
        return tuple(items)

    def entries(self) -> tuple[Node, ...]:
        items: list[Node] = []
        while not self.accept("}"):
            if self.peek().text == "?":
                raise Unparsed("optional entry")
            items.append(self.expr())
            self.expect(":")
            items.append(self.expr())
            if not self.accept(","):
                self.expect("}")
                break
        return tuple(items)


def parse(source: str) -> Node:
    """The tree of a CEL expression; :class:`Unparsed` when it cannot be read."""
    try:
        return _Parser(source).parse()
    except RecursionError:  # deeply right-nested ternaries or unary operators
        raise Unparsed("nested too deeply") from None


def _path_of(node: Node) -> tuple[str, Path] | None:
    """``(variable, fields)`` when the node is a plain field path such as ``event.data.id``."""
    fields: list[str] = []
    while node.kind == "select":
        fields.append(node.name)
        node = node.args[0]
    if node.kind != "ident":
        return None
    return node.name, tuple(reversed(fields))


def _reads(node: Node, variable: str, out: set[Path]) -> None:
    path = _path_of(node)
    if path is not None:
        if path[0] == variable:
            out.add(path[1])
        return
    for child in node.args:
        _reads(child, variable, out)


def _conjuncts(node: Node) -> list[Node]:
    if node.kind == "call" and node.name == "_&&_":
        return [part for arg in node.args for part in _conjuncts(arg)]
    return [node]


@dataclass(frozen=True)
class Shape:
    """What an expression over ``event`` and ``async`` needs and requires."""

    event_reads: tuple[Path, ...] | None
    """The paths of ``event`` it reads (``()``: all of it); no path is a prefix of another.
    None when the source could not be parsed: assume it reads all of it."""
    async_reads: tuple[Path, ...] | None
    """The same for ``async``."""
    equalities: tuple[tuple[Path, Path], ...]
    """``(async path, event path)`` of each top-level ``&&`` conjunct of the form
    ``async.A == event.B`` or ``event.B == async.A``: the expression is true only if each
    of them is."""


@lru_cache(maxsize=1024)
def shape(source: str) -> Shape:
    """The :class:`Shape` of a wait or cancel condition (``event`` and ``async``)."""
    try:
        tree = parse(source)
    except Unparsed:
        return Shape(None, None, ())
    equalities: list[tuple[Path, Path]] = []
    for conjunct in _conjuncts(tree):
        if conjunct.kind != "call" or conjunct.name != "_==_":
            continue
        left, right = (_path_of(arg) for arg in conjunct.args)
        if left is None or right is None or not left[1] or not right[1]:
            continue
        if left[0] == "event":
            left, right = right, left
        if left[0] == "async" and right[0] == "event":
            equalities.append((left[1], right[1]))
    return Shape(_read_paths(tree, "event"), _read_paths(tree, "async"), tuple(equalities))


def _read_paths(tree: Node, variable: str) -> tuple[Path, ...]:
    reads: set[Path] = set()
    _reads(tree, variable, reads)
    return tuple(sorted(p for p in reads if not any(q != p and p[:len(q)] == q for q in reads)))


def prune(document: Mapping[str, Any], paths: tuple[Path, ...]) -> dict[str, Any]:
    """A copy of ``document`` with only what reading ``paths`` sees: the value at each path,
    and the maps on the way to it (so a missing field is missing, and a path through a
    non-map value meets that value, exactly as in the whole document)."""
    if () in paths:
        return dict(document)
    out: dict[str, Any] = {}
    for path in paths:
        source: Any = document
        target = out
        for depth, part in enumerate(path):
            if not isinstance(source, Mapping) or part not in source:
                break
            value = source[part]
            if depth == len(path) - 1 or not isinstance(value, Mapping):
                target[part] = value
                break
            target = target.setdefault(part, {})
            source = value
    return out
