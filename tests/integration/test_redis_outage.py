"""Redis going away for a few seconds mid-run: the run recovers cleanly, nothing is lost."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import ROOT, RedisServer, wait_until
from tests.integration.test_crash_recovery import start_worker

pytestmark = pytest.mark.slow


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()  # its own server: the outage must not disturb other tests
    yield server
    server.stop()


def test_a_redis_outage_of_two_seconds_mid_step_is_survived(
    own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a lease that outlives the outage: the worker running the step keeps its run
    env = dict(os.environ, CRASH_REDIS_URL=own_redis.url(), CRASH_LEASE_TTL="15",
               CRASH_NAMESPACE=f"outage{uuid.uuid4().hex[:6]}", PYTHONPATH=str(ROOT))
    for key in ("CRASH_REDIS_URL", "CRASH_NAMESPACE", "CRASH_LEASE_TTL"):
        monkeypatch.setenv(key, env[key])
    sys.modules.pop("tests.integration.crash_app", None)  # configured from the env just set
    crash_app = importlib.import_module("tests.integration.crash_app")

    ns = env["CRASH_NAMESPACE"]

    def count(name: str) -> int:
        return int(redis.Redis.from_url(own_redis.url()).get(f"{ns}:count:{name}") or 0)

    worker = start_worker(env, "outage")
    try:
        # given a run inside its second step
        [event_id] = crash_app.steps.send("crash/outage")
        wait_until(lambda: count("slow") == 1, timeout=30, message="the slow step to start")

        # when Redis (broker, backend and store) is down for two seconds
        own_redis.outage(2.0)

        # then the run completes, each step run exactly once
        [run] = crash_app.steps.runs_for_event(event_id)
        run = crash_app.steps.wait_for_run(run.id, timeout=60)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(15)

    assert run.status == "completed"
    assert run.output == [1, 1, 1]
    assert [count(n) for n in ("first", "slow", "third")] == [1, 1, 1]
