"""Cron ticks through real `celery beat` processes: two beats, one run per tick."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, RedisServer, wait_until
from tests.integration.test_crash_recovery import start_worker

pytestmark = pytest.mark.slow


def start_beat(env: dict[str, str], schedule: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.integration.crash_app", "beat",
         "-s", str(schedule), "--loglevel", "WARNING"],
        cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def env(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    values = dict(os.environ, CRASH_REDIS_URL=redis_server.url(),
                  CRASH_NAMESPACE=f"beat{uuid.uuid4().hex[:6]}", PYTHONPATH=str(ROOT))
    for key in ("CRASH_REDIS_URL", "CRASH_NAMESPACE"):
        monkeypatch.setenv(key, values[key])
    yield values


def test_two_beat_processes_start_one_run_per_cron_tick(
    env: dict[str, str], tmp_path: Path
) -> None:
    sys.modules.pop("tests.integration.crash_app", None)  # configured from the env just set
    crash_app = importlib.import_module("tests.integration.crash_app")
    steps = crash_app.steps

    # given a worker and two beat processes sending the same every-minute tick
    procs = [start_worker(env, "beat-worker"),
             start_beat(env, tmp_path / "one"), start_beat(env, tmp_path / "two")]
    try:
        # when the next minute starts
        [first] = wait_until(lambda: steps.list_runs(function_id="ticker"), timeout=90,
                             message="a cron run started by beat")
        first = steps.wait_for_run(first.id, timeout=30)
        time.sleep(3)  # both beats have sent their tick for that minute by now
        runs = steps.list_runs(function_id="ticker")
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(15)

    # then that tick started exactly one run, named after the minute in Paris
    ticks = [r.event_ids[0] for r in runs]
    assert ticks.count(first.event_ids[0]) == 1
    assert first.status == "completed"
    assert first.event_ids[0] == f"cron:ticker:{first.output}"
