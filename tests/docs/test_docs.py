"""Every ```python block of README.md and docs/*.md runs, against a real Redis and a real worker.

One test per Markdown file: its blocks run in order in one process (tests/docs/session.py says
how), so a doc that drifts from the code fails here. A block that cannot run (it needs a
service the suite does not have) is marked ``<!-- docs-test: skip (why) -->`` on the line
before its fence, and is still compiled.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RedisServer
from tests.docs.docblocks import ROOT, DocSyntaxError, doc_files, python_blocks

SESSION = Path(__file__).with_name("session.py")
DOCS = doc_files()
MAX_SKIPPED = 3  # skipping is the exception: each one needs a reason a reader would accept


@pytest.mark.timeout(150)
@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_every_python_block_of_the_doc_runs(doc: Path, redis_server: RedisServer,
                                             tmp_path: Path) -> None:
    # given the document's blocks, a project directory for its files and the test Redis
    blocks = python_blocks(doc)
    if all(block.skip is not None for block in blocks):  # nothing to run: compiling will do
        for block in blocks:
            compile(block.code, str(doc), "exec")
        return
    # when they run in order in a fresh process
    result = subprocess.run(
        [sys.executable, str(SESSION), str(doc), str(redis_server.port), str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=140,
    )
    # then every one ran (or compiled, when marked skip) and no run met an error
    assert result.returncode == 0, (
        f"{doc.relative_to(ROOT)} does not run as written:\n"
        f"{result.stderr[-8000:]}\n--- stdout ---\n{result.stdout[-4000:]}"
    )


def test_skipped_blocks_are_few_and_each_says_why() -> None:
    skipped = [b for doc in DOCS for b in python_blocks(doc) if b.skip is not None]
    assert len(skipped) <= MAX_SKIPPED, [f"{b.where}: {b.skip}" for b in skipped]
    assert all(len(b.skip or "") >= 10 for b in skipped)


def test_the_readme_and_the_quick_start_have_blocks_that_run() -> None:
    for name in ("README.md", "docs/quickstart.md"):
        blocks = python_blocks(ROOT / name)
        assert any(b.skip is None for b in blocks), name


# -- the block reader ---------------------------------------------------------------------
def write(tmp_path: Path, text: str) -> Path:
    doc = tmp_path / "doc.md"
    doc.write_text(text)
    return doc


def test_a_block_starts_at_the_line_after_its_fence_and_knows_its_file(tmp_path: Path) -> None:
    doc = write(tmp_path, "# Title\n\n```python\n# proj/__init__.py\nx = 1\n```\n\n"
                          "```bash\nls\n```\n```python\ny = 2\n```\n")
    first, second = python_blocks(doc)
    assert (first.line, first.file, first.module, first.skip) == (4, "proj/__init__.py",
                                                                  "proj", None)
    assert (second.line, second.code, second.file) == (12, "y = 2\n", None)


def test_a_skip_marker_marks_the_next_python_block_with_its_reason(tmp_path: Path) -> None:
    doc = write(tmp_path, "<!-- docs-test: skip (needs the stripe package) -->\n"
                          "```python\nimport stripe\n```\n```python\nz = 3\n```\n")
    marked, plain = python_blocks(doc)
    assert (marked.skip, plain.skip) == ("needs the stripe package", None)


@pytest.mark.parametrize("text, message", [
    ("<!-- docs-test: skip -->\n```python\nx\n```\n", "unknown docs-test marker"),
    ("<!-- docs-test: skip () -->\n```python\nx\n```\n", "unknown docs-test marker"),
    ("<!-- docs-test: run later -->\n```python\nx\n```\n", "unknown docs-test marker"),
    ("<!-- docs-test: skip (why not) -->\nSome text.\n```python\nx\n```\n", "right before"),
    ("<!-- docs-test: skip (a shell) -->\n```bash\nls\n```\n", "not a python one"),
    ("<!-- docs-test: skip (nothing after) -->\n", "no block after it"),
    ("```python\nx = 1\n", "never closed"),
])
def test_markers_and_fences_the_reader_cannot_trust_are_refused(
        tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DocSyntaxError, match=message):
        python_blocks(write(tmp_path, text))
