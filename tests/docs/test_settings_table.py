"""docs/configuration.md's settings table says what celery_steps.settings.Settings does."""

from __future__ import annotations

import ast
import dataclasses
import re

from celery_steps.settings import Settings
from tests.docs.docblocks import ROOT

ROW = re.compile(r"^\| `steps_(\w+)` \| `(CELERY_STEPS_\w+)` \| `([^`]+)`")


def documented() -> dict[str, tuple[str, str]]:
    """setting name -> (Django name, default as written), from the table's rows."""
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = (ROW.match(line) for line in text.splitlines())
    return {m.group(1): (m.group(2), m.group(3)) for m in rows if m}


def test_every_setting_is_in_the_table_and_nothing_else() -> None:
    assert set(documented()) == {f.name for f in dataclasses.fields(Settings)}


def test_each_row_gives_the_default_the_code_uses_and_the_django_name() -> None:
    defaults = Settings()
    for name, (django_name, written) in documented().items():
        assert django_name == f"CELERY_STEPS_{name.upper()}"
        assert ast.literal_eval(written) == getattr(defaults, name), (
            f"docs/configuration.md gives steps_{name} a default of {written}; "
            f"the code's is {getattr(defaults, name)!r}"
        )
