"""Real ``celery worker`` nodes for the end-to-end benches, and how those benches watch runs.

A *node* is one ``celery -A bench.wake_app worker -P prefork`` process with its pool, in its
own session so that it and its children can be killed together. The app module reads its
Redis URL, namespace and extra settings from the environment (see ``bench/wake_app.py``) and
announces ``<ns>:ready:<node>`` once it consumes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from celery_steps import CelerySteps

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Nodes:
    """``celery worker`` processes of ``bench.wake_app``, each in its own session."""

    url: str
    namespace: str
    conf: dict[str, Any]
    logs: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, count: int, concurrency: int) -> None:
        client = redis.Redis.from_url(self.url)
        for i in range(count):
            name = f"node{i}"
            env = dict(os.environ, WAKE_REDIS_URL=self.url, WAKE_NAMESPACE=self.namespace,
                       WAKE_CONF=json.dumps(self.conf), WAKE_NODE=name, PYTHONPATH=str(ROOT))
            log = (self.logs / f"{self.namespace}-{name}.log").open("ab")
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "bench.wake_app", "worker",
                 "-P", "prefork", "-c", str(concurrency), "-n", f"{name}@%h",
                 "-Q", self.namespace, "--without-mingle", "--without-gossip",
                 "--without-heartbeat", "--loglevel", "WARNING"],
                cwd=ROOT, env=env, start_new_session=True, stdout=log,
                stderr=subprocess.STDOUT))
            log.close()
        deadline = time.monotonic() + 60
        for i in range(count):
            while not client.exists(f"{self.namespace}:ready:node{i}"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker node{i} did not start: see {self.logs}")
                time.sleep(0.1)
        client.close()

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            proc.wait(15)
        self.procs.clear()


def statuses(client: redis.Redis, keys: list[str]) -> list[bytes | None]:
    """The ``status`` field of each run hash, pipelined."""
    out: list[bytes | None] = []
    for start in range(0, len(keys), 5000):
        with client.pipeline(transaction=False) as pipe:
            for key in keys[start:start + 5000]:
                pipe.hget(key, "status")
            out.extend(pipe.execute())
    return out


def wait_status(client: redis.Redis, keys: list[str], wanted: set[bytes], timeout: float,
                every: float = 0.1) -> float:
    """Seconds until every run has a status in ``wanted`` (only pending ones re-read)."""
    t0 = time.monotonic()
    pending = list(keys)
    while pending:
        pending = [k for k, s in zip(pending, statuses(client, pending), strict=True)
                   if s not in wanted]
        if not pending:
            break
        if time.monotonic() - t0 > timeout:
            seen = Counter(statuses(client, pending))
            raise TimeoutError(f"{len(pending)}/{len(keys)} runs not in {wanted} after "
                               f"{timeout:.0f} s: {seen.most_common(4)}")
        time.sleep(every)
    return time.monotonic() - t0


def send_all(steps: CelerySteps, events: list[dict[str, Any]]) -> list[str]:
    """``steps.send`` in batches of 1,000; the event ids."""
    ids: list[str] = []
    for start in range(0, len(events), 1000):
        ids.extend(steps.send(events[start:start + 1000]))
    return ids
