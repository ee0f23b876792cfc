"""The sdist and the wheel carry everything the package needs at run time, and PyPI accepts them.

Built with ``python -m build --no-isolation`` (the build backend comes from the dev extras), so
the test needs no network, from a copy of the checkout without build leftovers: a stale
``*.egg-info`` would otherwise smuggle in files the configuration forgot.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import celery_steps

ROOT = Path(__file__).resolve().parents[2]
LUA_SCRIPTS = sorted(p.name for p in (ROOT / "celery_steps" / "store" / "lua").glob("*.lua"))
LEFTOVERS = shutil.ignore_patterns(
    ".git", ".venv", ".tox", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".redis",
    "db.sqlite3",
)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and, built from it, the wheel, in a fresh directory."""
    source = tmp_path_factory.mktemp("source") / "celery-steps"
    shutil.copytree(ROOT, source, ignore=LEFTOVERS)
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return out


def only(directory: Path, pattern: str) -> Path:
    [path] = directory.glob(pattern)
    return path


def test_the_wheel_carries_the_lua_scripts_and_py_typed(dist: Path) -> None:
    names = set(zipfile.ZipFile(only(dist, "*.whl")).namelist())
    assert LUA_SCRIPTS  # the glob found the scripts, so the next line checks something
    assert {f"celery_steps/store/lua/{name}" for name in LUA_SCRIPTS} <= names
    assert "celery_steps/py.typed" in names


def test_the_sdist_carries_the_lua_scripts_and_py_typed(dist: Path) -> None:
    with tarfile.open(only(dist, "*.tar.gz")) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {f"celery_steps/store/lua/{name}" for name in LUA_SCRIPTS} <= names
    assert {"celery_steps/py.typed", "README.md", "setup.cfg", "pyproject.toml"} <= names


def test_the_metadata_has_one_version_and_requires_python_3_11(dist: Path) -> None:
    wheel = zipfile.ZipFile(only(dist, "*.whl"))
    [metadata_name] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    metadata = Parser().parsestr(wheel.read(metadata_name).decode())
    assert metadata["Version"] == celery_steps.__version__
    assert metadata["Requires-Python"] == ">=3.11"
    assert metadata["Description-Content-Type"] == "text/markdown"


def test_twine_check_passes_on_both(dist: Path) -> None:
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, sorted(dist.iterdir()))],
        capture_output=True, text=True, timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("PASSED") == 2
