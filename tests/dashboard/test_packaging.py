"""The templates and the stylesheet ship in the wheel: setup.cfg's package_data covers them."""

from __future__ import annotations

import configparser
from fnmatch import fnmatch

from tests.dashboard.conftest import ROOT


def test_package_data_covers_every_template_and_static_file() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["celery_steps"].split(",")]
    package = ROOT / "celery_steps"
    files = [f.relative_to(package).as_posix()
             for folder in ("dashboard/templates", "dashboard/static")
             for f in (package / folder).rglob("*") if f.is_file()]

    assert len(files) >= 10
    assert [f for f in files if not any(fnmatch(f, p) for p in patterns)] == []


def test_the_dashboard_extra_lists_the_web_stack() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    extra = config["options.extras_require"]["dashboard"].split()
    names = {line.split(">")[0].split("=")[0] for line in extra}
    assert names == {"starlette", "jinja2", "uvicorn", "python-multipart"}
    dev = config["options.extras_require"]["dev"]
    assert all(name in dev for name in names)
