"""``celery -A tests.cli.doctorapp steps doctor`` against real Redis servers and workers."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis

from celery_steps.doctor import Check, _skew_check, _version_check
from tests.conftest import ROOT, RedisServer, wait_until

pytestmark = pytest.mark.slow


def doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.cli.doctorapp", "steps", "doctor",
         "--timeout", "1", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
    )


def by_check(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    return {c["check"]: c for c in json.loads(result.stdout)}


def start_worker(env: dict[str, str], queues: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.cli.doctorapp", "worker", "-P", "solo",
         "-n", f"doctor-{uuid.uuid4().hex[:4]}@%h", "-Q", queues, "--without-steps-timers",
         "--loglevel", "WARNING"],
        cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def setup(url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, str], Any]:
    """The env of the CLI and worker processes, and the app as this process sees it."""
    ns = f"doc{uuid.uuid4().hex[:6]}"
    env = dict(os.environ, DOCTOR_REDIS_URL=url, DOCTOR_NAMESPACE=ns, PYTHONPATH=str(ROOT))
    monkeypatch.setenv("DOCTOR_REDIS_URL", url)
    monkeypatch.setenv("DOCTOR_NAMESPACE", ns)
    sys.modules.pop("tests.cli.doctorapp", None)
    return env, importlib.import_module("tests.cli.doctorapp")


def running(worker: subprocess.Popen[bytes], module: Any) -> Iterator[None]:
    try:
        wait_until(lambda: module.app.control.ping(timeout=0.5), timeout=60,
                   message="the worker answering ping")
        yield
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(15)


@pytest.fixture
def lru_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    redis.Redis(port=server.port).config_set("maxmemory-policy", "allkeys-lru")
    yield server
    server.stop()


def test_doctor_fails_an_evicting_redis_and_a_queue_nobody_consumes(
    lru_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given an evicting Redis, and a worker that consumes only the default queue
    env, module = setup(lru_redis.url(), monkeypatch)
    worker = start_worker(env, module.NS)
    for _ in running(worker, module):
        # when the doctor checks the deployment
        text = doctor(env)
        data = doctor(env, "--json")

    # then it exits 1, with one FAIL line per problem, each saying how to fix it
    assert text.returncode == data.returncode == 1, text.stderr
    lines = text.stdout.splitlines()
    policy = next(line for line in lines if "maxmemory-policy" in line)
    assert policy.startswith("FAIL") and "noeviction" in policy and "allkeys-lru" in policy
    queue = next(line for line in lines if line.split()[1:3] == ["queue", module.IMAGES])
    assert queue.startswith("FAIL")
    assert f"`celery -A tests.cli.doctorapp worker -Q {module.IMAGES}`" in queue
    assert "celery_steps.fn.resize" in queue
    checks = by_check(data)
    assert checks[f"queue {module.IMAGES}"]["status"] == "FAIL"
    assert checks[f"queue {module.NS}"]["status"] == "PASS"
    assert checks["store"]["status"] == "PASS"
    assert {c["status"] for c in checks.values()} <= {"PASS", "WARN", "FAIL"}
    assert all(set(c) == {"check", "status", "detail"} for c in checks.values())


def test_doctor_passes_a_worker_consuming_every_queue(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a noeviction Redis and a worker that consumes every queue the app uses
    env, module = setup(redis_server.url(), monkeypatch)
    worker = start_worker(env, f"{module.NS},{module.IMAGES}")
    for _ in running(worker, module):
        result = doctor(env, "--json")

    # then nothing fails: the queues are consumed, the clocks agree
    assert result.returncode == 0, (result.stdout, result.stderr)
    checks = by_check(result)
    assert not [c for c in checks.values() if c["status"] == "FAIL"]
    for name in ("store", "maxmemory-policy", "redis version", "workers",
                 f"queue {module.NS}", f"queue {module.IMAGES}", "clock redis"):
        assert checks[name]["status"] == "PASS", checks[name]
    [worker_clock] = [c for name, c in checks.items() if name.startswith("clock doctor-")]
    assert worker_clock["status"] == "PASS" and "Redis" in worker_clock["detail"]
    # the test server runs without persistence, and no beat runs: warnings, with the fix
    assert checks["persistence"]["status"] == "WARN"
    assert "appendonly yes" in checks["persistence"]["detail"]
    assert checks["beat"]["status"] == "WARN"
    assert "beat_enable_remote_control" in checks["beat"]["detail"]


def test_doctor_fails_when_no_worker_answers(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, module = setup(redis_server.url(), monkeypatch)

    result = doctor(env, "--json")

    assert result.returncode == 1
    workers = by_check(result)["workers"]
    assert workers["status"] == "FAIL"
    assert f"-Q {module.NS},{module.IMAGES}" in workers["detail"]


def test_doctor_sees_beat_through_the_latest_cron_tick_it_sent(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the event of the latest nightly tick, as beat's tick task records it
    env, module = setup(redis_server.url(), monkeypatch)
    cron = module.steps.functions["nightly"]._crons[0]
    fire = cron.latest_at_or_before(datetime.now(timezone.utc) - timedelta(minutes=1))
    module.steps.send("doctor/tick", {}, id=f"cron:nightly:{cron.tick_id(fire)}")

    result = doctor(env, "--json")

    beat = by_check(result)["beat"]
    assert beat["status"] == "PASS"
    assert cron.tick_id(fire) in beat["detail"]


@pytest.mark.parametrize(("offset", "status"), [(0.2, "PASS"), (-3.0, "WARN"), (42.0, "FAIL")])
def test_clock_skew_grades(offset: float, status: str) -> None:
    check = _skew_check("clock w@h", offset, 0.01, "Redis")
    assert check == Check("clock w@h", status, check.detail)  # type: ignore[arg-type]
    assert ("behind" if offset < 0 else "ahead of") in check.detail


def test_an_old_redis_is_a_warning() -> None:
    assert _version_check("5.0.7").status == "WARN"
    assert _version_check("7.2.4").status == "PASS"
