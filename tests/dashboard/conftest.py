"""Fixtures: the shop's functions on an eager CelerySteps (memory store or a real Redis),
and a Starlette TestClient on its dashboard."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from starlette.testclient import TestClient

from celery_steps import CelerySteps
from celery_steps.clock import FakeClock
from celery_steps.dashboard import create_app
from celery_steps.testing import settle
from tests.conftest import wait_until
from tests.dashboard.shop import declare

TOKEN = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')
START_MS = 1_790_000_000_000


def shop_steps(clock: FakeClock, store_url: str = "memory://",
               namespace: str = "dash") -> CelerySteps:
    """An eager CelerySteps with the shop declared (runs execute in the caller)."""
    app = Celery(f"dash_{id(clock)}", broker="memory://", set_as_current=False)
    app.conf.update(task_always_eager=True, steps_timer_poller=False,
                    steps_store_url=store_url, steps_namespace=namespace,
                    steps_retry_backoff_base=0.2)
    steps = CelerySteps(app, clock=clock)
    declare(steps)
    return steps


def start(steps: CelerySteps, name: str, data: dict[str, Any] | None = None, *,
          finish: bool = True, event_id: str | None = None) -> str:
    """Send an event, and (with ``finish``) drive the run it starts to its end; its id."""
    [eid] = steps.send(name, data or {}, id=event_id)
    [run] = steps.runs_for_event(eid)
    if finish:
        settle(steps, run.id)
    return run.id


def form_token(client: TestClient, path: str) -> str:
    """The CSRF token of the forms on a page (the client keeps the matching cookie)."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = TOKEN.search(page.text)
    assert found, "the page has no form token"
    return found.group(1)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_ms=START_MS)


@pytest.fixture
def steps(clock: FakeClock) -> CelerySteps:
    return shop_steps(clock)


@pytest.fixture
def client(steps: CelerySteps) -> Iterator[TestClient]:
    with TestClient(create_app(steps)) as test_client:
        yield test_client


# -- a real Redis, and the dashboard served by the CLI ------------------------------------------
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def redis_steps(redis_url: str, namespace: str) -> Iterator[CelerySteps]:
    """The shop on a real Redis (a fresh namespace), runs executed in the test."""
    steps = shop_steps(FakeClock(), redis_url, namespace)
    yield steps
    steps.runtime.store.close()


def cli_env(redis_url: str, namespace: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["CELERY_STEPS_TEST_REDIS_URL"] = redis_url
    env["CELERY_STEPS_TEST_NAMESPACE"] = namespace
    return env


def dashboard_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "tests.dashboard.dashapp", "steps",
            "dashboard", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[str]
    log: Path


@contextmanager
def serve_dashboard(redis_url: str, namespace: str, tmp: Path, *args: str) -> Iterator[Served]:
    """``celery -A tests.dashboard.dashapp steps dashboard`` on a free port, until the end."""
    port = free_port()
    log = tmp / "dashboard.log"
    with log.open("w") as out:
        proc = subprocess.Popen(dashboard_command("--port", str(port), *args), cwd=ROOT,
                                env=cli_env(redis_url, namespace), stdout=out, stderr=out,
                                text=True)
    try:
        def listening() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        wait_until(listening, timeout=30, interval=0.05, message="the dashboard to listen")
        yield Served(f"http://127.0.0.1:{port}", proc, log)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
