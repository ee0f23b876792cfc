"""``celery -A proj steps dashboard``: who it refuses, the missing extra, and serving."""

from __future__ import annotations

import base64
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.dashboard.conftest import ROOT, cli_env, dashboard_command, serve_dashboard


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(dashboard_command(*args), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def env(redis_url: str, namespace: str) -> dict[str, str]:
    return cli_env(redis_url, namespace)


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "192.0.2.10", "dashboard.example"])
def test_a_non_loopback_address_without_basic_auth_is_refused_in_one_line(
    address: str, env: dict[str, str]
) -> None:
    result = run_cli("--address", address, env=env)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: refusing to serve the dashboard on {address} without "
                     "--basic-auth: anyone who can reach it could cancel and replay runs; add "
                     "--basic-auth USER:PASS or use --address 127.0.0.1"]
    assert result.stdout == ""


def test_a_malformed_basic_auth_is_refused_in_one_line(env: dict[str, str]) -> None:
    result = run_cli("--basic-auth", "no-colon", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --basic-auth must be USER:PASS, both non-empty"]


def test_a_missing_extra_is_named_with_its_install_command(env: dict[str, str]) -> None:
    # given an interpreter where starlette cannot be imported
    script = ("import sys; sys.modules['starlette'] = None\n"
              "from celery.__main__ import main\n"
              "sys.argv = ['celery', '-A', 'tests.dashboard.dashapp', 'steps', 'dashboard']\n"
              "main()\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: the dashboard needs starlette: pip install 'celery-steps[dashboard]'"]


def test_importing_celery_steps_needs_no_web_stack(env: dict[str, str]) -> None:
    script = ("import sys\n"
              "for m in ('starlette', 'jinja2', 'uvicorn', 'multipart'): sys.modules[m] = None\n"
              "import celery_steps, celery_steps.cli, celery_steps.dashboard\n"
              "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.redis
def test_the_command_serves_the_dashboard_behind_basic_auth(redis_url: str, namespace: str,
                                                            tmp_path: Path) -> None:
    # given the dashboard served on 0.0.0.0 with credentials
    with serve_dashboard(redis_url, namespace, tmp_path, "--address", "0.0.0.0",
                         "--basic-auth", "ops:pa55-word") as served:
        url = served.url + "/api/runs"

        # when it is asked without and with them
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        token = base64.b64encode(b"ops:pa55-word").decode()
        request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
        with urllib.request.urlopen(request, timeout=10) as ok:
            body = ok.read()

    # then 401, then 200 with the (empty) list; the password is never printed
    assert refused.value.code == 401
    assert body == b'{"runs":[],"next_before":null}'
    log = served.log.read_text()
    assert "basic auth as 'ops'" in log
    assert "GET /api/runs" in log
    assert "pa55-word" not in log
