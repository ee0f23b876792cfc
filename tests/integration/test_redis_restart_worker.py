"""Redis (broker, result backend and store) restarting while a function task runs: the worker
process stays up, reconnects, keeps consuming, and the run in flight completes intact.

Without the guard in ``celery_steps.integration.resilience`` the worker exits with
"Unrecoverable error: AttributeError("'NoneType' object has no attribute 'hostname'")".
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import redis

from celery_steps import Run
from tests.conftest import ROOT, RedisServer, wait_until

pytestmark = pytest.mark.slow

APP = "tests.integration.restart_app"


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()  # its own server: the restart must not disturb other tests
    yield server
    server.stop()


@pytest.fixture
def restart_app(own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("RESTART_REDIS_URL", own_redis.url())
    monkeypatch.setenv("RESTART_NAMESPACE", f"restart{uuid.uuid4().hex[:6]}")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    sys.modules.pop(APP, None)  # configured from the env just set
    return importlib.import_module(APP)


def start_worker(pool: str, log: Path) -> subprocess.Popen[bytes]:
    """A real ``celery worker`` with two slots, its output kept in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", APP, "worker", "-P", pool, "-c", "2",
             "-n", f"restart-{pool}@%h", "-Q", os.environ["RESTART_NAMESPACE"],
             "--loglevel", "WARNING"],
            cwd=ROOT, env=dict(os.environ), start_new_session=True,
            stdout=out, stderr=subprocess.STDOUT,
        )


def stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)


def ended_run(app: ModuleType, event_id: str, worker: subprocess.Popen[bytes], log: Path,
              timeout: float = 30) -> Run:
    """The run ``event_id`` started, once it has ended; fails with the worker's log if not."""

    def ended() -> Run | None:
        if worker.poll() is not None:
            raise AssertionError(f"the worker exited ({worker.returncode})")
        runs = app.steps.runs_for_event(event_id, timeout=0)
        return runs[0] if runs and runs[0].ended else None

    try:
        return wait_until(ended, timeout=timeout, interval=0.05,
                          message=f"the run of event {event_id} to end")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; worker log:\n{log.read_text()[-4000:]}") from None


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_redis_restart_with_a_step_in_flight_keeps_the_worker_alive(
    pool: str, own_redis: RedisServer, restart_app: ModuleType, tmp_path: Path
) -> None:
    counts = redis.Redis.from_url(own_redis.url())
    ns = os.environ["RESTART_NAMESPACE"]

    def count(name: str) -> int:
        return int(counts.get(f"{ns}:count:{name}") or 0)

    log = tmp_path / "worker.log"
    worker = start_worker(pool, log)
    try:
        # given a worker running the second step of a run (an acks-late task in flight)
        [held_event] = restart_app.steps.send("restart/held")
        wait_until(lambda: count("held") == 1, timeout=30, message="the held step to start")

        # when Redis is restarted (snapshot, SIGKILL, start again from the snapshot)
        own_redis.outage(1.0)

        # then the worker reconnects and runs new work while the step is still in flight
        [during] = restart_app.steps.send("restart/quick", {"tag": "during"})
        assert ended_run(restart_app, during, worker, log).output == "during"
        assert count("third") == 0, "the held step must still be running"

        # and the held run completes; its task then acks on the pre-restart channel
        counts.set(restart_app.RELEASE_KEY, 1)
        held_run = ended_run(restart_app, held_event, worker, log)

        # and the worker survives that too and keeps consuming
        [after] = restart_app.steps.send("restart/quick", {"tag": "after"})
        assert ended_run(restart_app, after, worker, log).output == "after"
        alive = worker.poll() is None
    finally:
        with contextlib.suppress(redis.exceptions.ConnectionError):
            counts.set(restart_app.RELEASE_KEY, 1)  # let a failed test's worker stop quickly
        stop(worker)

    output = log.read_text()
    assert "Connection to broker lost" in output, "the worker never saw the restart"
    assert "Unrecoverable error" not in output, output[-4000:]
    assert alive, "the worker process exited"
    assert held_run.status == "completed"
    assert held_run.output == [1, 1, 1]
    assert [count(n) for n in ("first", "held", "third")] == [1, 1, 1]
    assert [s.attempts for s in held_run.steps] == [1, 1, 1]
