"""Fixtures for the durability tests: a namespace on the real redis-server, the worker app
imported with it, and ``celery worker`` subprocesses that are always killed afterwards."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import ROOT, RedisServer, wait_until

APP = "tests.durability.worker_app"


class Cluster:
    """The worker app (imported in the test process) and the worker processes around it."""

    def __init__(self, env: dict[str, str], app: ModuleType, logs: Path) -> None:
        self.env = env
        self.app = app
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def ns(self) -> str:
        return self.env["DUR_NAMESPACE"]

    def start_worker(self, name: str, *, pool: str = "solo", concurrency: int = 1,
                     queues: list[str] | None = None, crash_at: str | None = None,
                     crash_once: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``celery worker`` in its own session (killed with its whole group later)."""
        env = dict(self.env, DUR_WORKER_NAME=name)
        if crash_at is not None:
            env["CELERY_STEPS_CRASH_AT"] = crash_at
        if crash_once is not None:
            env["CELERY_STEPS_CRASH_ONCE"] = str(crash_once)
        queues = queues if queues is not None else [self.ns, self.app.TASKS_QUEUE]
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", APP, "worker", "-P", pool,
             "-c", str(concurrency), "-n", f"{name}@%h", "-Q", ",".join(queues),
             "--loglevel", "INFO"],
            cwd=ROOT, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def wait_ready(self, name: str, timeout: float = 30) -> None:
        wait_until(lambda: self.app.is_ready(name), timeout=timeout,
                   message=f"worker {name} to be ready (log: {self.logs / (name + '.log')})")

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Signal the worker's whole process group (its pool children too) and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(15)

    def stop_all(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # children outlive a dead master otherwise
        for proc in self.procs:
            proc.wait(15)


@pytest.fixture
def cluster_factory(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch,
                    tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """``cluster_factory(**conf)``: the worker app in a fresh namespace, ``conf`` merged into
    its ``app.conf`` in this process and in every worker it starts."""
    made: list[Cluster] = []

    def make(**conf: Any) -> Cluster:
        env = dict(os.environ, DUR_REDIS_URL=redis_server.url(),
                   DUR_NAMESPACE=f"dur{uuid.uuid4().hex[:8]}", DUR_CONF=json.dumps(conf),
                   PYTHONPATH=str(ROOT))
        for key in ("DUR_REDIS_URL", "DUR_NAMESPACE", "DUR_CONF"):
            monkeypatch.setenv(key, env[key])
        sys.modules.pop(APP, None)  # configured from the environment just set
        cluster = Cluster(env, importlib.import_module(APP), tmp_path)
        made.append(cluster)
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            cluster.stop_all()
        sys.modules.pop(APP, None)
