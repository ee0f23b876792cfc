"""The ```python blocks of README.md and docs/*.md, as the docs test runs them.

A block is skipped (only compiled) when the line before its fence is
``<!-- docs-test: skip (why) -->``; the reason is required. A block whose first line is a file
name such as ``# proj/celery.py`` is that file: the docs test writes it into a project
directory and imports it, so relative imports, ``include=`` and Django app loading work as
they would for a reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")
MARKER = re.compile(r"^<!--\s*docs-test:(.*?)-->$")
SKIP = re.compile(r"^\s*skip\s*\((.*\S.*)\)\s*$")
FILE_LABEL = re.compile(r"^#\s+((?:[A-Za-z_]\w*/)*[A-Za-z_]\w*\.py)\s*$")


class DocSyntaxError(ValueError):
    """A docs-test marker or a fence the docs test cannot read."""


@dataclass(frozen=True)
class Block:
    """One ```python block: its code, and where it starts in its Markdown file."""

    doc: Path
    line: int  # 1-based line of the block's first line of code
    code: str
    skip: str | None = None  # why the block is only compiled, for a marked block

    @property
    def file(self) -> str | None:
        """``proj/celery.py`` for a block whose first line is ``# proj/celery.py``."""
        first = self.code.split("\n", 1)[0]
        match = FILE_LABEL.match(first)
        return match.group(1) if match else None

    @property
    def module(self) -> str | None:
        """The dotted module name of a file block (``proj`` for ``proj/__init__.py``)."""
        if self.file is None:
            return None
        parts = self.file[: -len(".py")].split("/")
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    @property
    def where(self) -> str:
        doc = self.doc.relative_to(ROOT) if self.doc.is_relative_to(ROOT) else self.doc
        return f"{doc}:{self.line}"


def doc_files() -> list[Path]:
    """README.md, then every docs/*.md in name order."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(doc: Path) -> list[Block]:
    """The ```python blocks of ``doc``, in order, with their skip markers."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    marker: tuple[int, str] | None = None  # (line, reason) of a skip marker not yet used
    i = 0
    while i < len(lines):
        text = lines[i].strip()
        found = MARKER.match(text)
        if found:
            skip = SKIP.match(found.group(1))
            if skip is None:
                raise DocSyntaxError(
                    f"{doc.name}:{i + 1}: unknown docs-test marker {text!r}; the only one is "
                    "<!-- docs-test: skip (why the block cannot run) -->, with its reason"
                )
            marker = (i + 1, skip.group(1).strip())
        fence = FENCE.match(lines[i])
        if fence:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), None)
            if end is None:
                raise DocSyntaxError(f"{doc.name}:{i + 1}: a code fence that is never closed")
            if fence.group(1) in ("python", "py"):
                blocks.append(Block(doc, i + 2, "\n".join(lines[i + 1 : end]) + "\n",
                                    marker[1] if marker else None))
            elif marker is not None:
                raise DocSyntaxError(f"{doc.name}:{marker[0]}: a skip marker before a "
                                     f"{fence.group(1) or 'plain'} block, not a python one")
            marker = None
            i = end + 1
            continue
        if marker is not None and text and not found:
            raise DocSyntaxError(f"{doc.name}:{marker[0]}: a skip marker must be the line "
                                 "right before the ```python fence it marks")
        i += 1
    if marker is not None:
        raise DocSyntaxError(f"{doc.name}:{marker[0]}: a skip marker with no block after it")
    return blocks
