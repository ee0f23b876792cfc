"""A worker killed with SIGKILL mid-step loses nothing: the run resumes elsewhere and
completed steps do not run again."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import ROOT, RedisServer, wait_until

pytestmark = pytest.mark.slow


def start_worker(env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.integration.crash_app", "worker",
         "-P", "solo", "-n", f"{name}@%h", "-Q", env["CRASH_NAMESPACE"], "--loglevel", "WARNING"],
        cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def crash_env(redis_server: RedisServer) -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    env.update(CRASH_REDIS_URL=redis_server.url(), CRASH_NAMESPACE=f"crash{uuid.uuid4().hex[:6]}",
               PYTHONPATH=str(ROOT))
    yield env


def test_sigkill_mid_step_resumes_without_rerunning_completed_steps(
    crash_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in crash_env.items():
        monkeypatch.setenv(key, value)
    sys.modules.pop("tests.integration.crash_app", None)  # configured from the env just set
    crash_app = importlib.import_module("tests.integration.crash_app")

    counts = redis.Redis.from_url(crash_env["CRASH_REDIS_URL"])
    ns = crash_env["CRASH_NAMESPACE"]

    def count(name: str) -> int:
        return int(counts.get(f"{ns}:count:{name}") or 0)

    # given a worker running the second step of a run
    doomed = start_worker(crash_env, "doomed")
    survivor = None
    try:
        [event_id] = crash_app.steps.send("crash/go")
        wait_until(lambda: count("slow") == 1, timeout=30, message="the slow step to start")

        # when the worker is killed with SIGKILL mid-step and another worker starts
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait(10)
        survivor = start_worker(crash_env, "survivor")

        # then the run completes; the finished step was not run again
        [run] = crash_app.steps.runs_for_event(event_id)
        run = crash_app.steps.wait_for_run(run.id, timeout=60)
    finally:
        for proc in (doomed, survivor):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(15)

    assert run.status == "completed"
    assert run.output == {"first": 1, "slow": 2, "third": 1}
    assert (count("first"), count("slow"), count("third")) == (1, 2, 1)
    # the attempt whose process was killed counts: the slow step took two
    assert [s.attempts for s in run.steps] == [1, 2, 1]
