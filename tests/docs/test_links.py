"""The docs stand on their own: every relative link leads to a file of the repository, and
nothing points at design notes that are not in it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs.docblocks import ROOT, doc_files

LINK = re.compile(r"\]\(([^)\s]+)\)")
NOT_IN_THE_REPOSITORY = ("DESIGN.md", "API.md", "../shared")


@pytest.mark.parametrize("doc", doc_files(), ids=lambda d: str(d.relative_to(ROOT)))
def test_relative_links_lead_to_files_of_the_repository(doc: Path) -> None:
    targets = [t for t in LINK.findall(doc.read_text(encoding="utf-8"))
               if not re.match(r"[a-z]+:|#", t)]
    missing = [t for t in targets if not (doc.parent / t.split("#")[0]).resolve().exists()]
    assert missing == []


def test_no_doc_or_module_refers_to_notes_outside_the_repository() -> None:
    files = [*doc_files(), *sorted((ROOT / "celery_steps").rglob("*.py")), ROOT / "CHANGELOG.md"]
    found = [f"{path.relative_to(ROOT)}: {name}" for path in files
             for name in NOT_IN_THE_REPOSITORY if name in path.read_text(encoding="utf-8")]
    assert found == []
