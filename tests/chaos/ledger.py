"""The chaos test's ledger: what the workload did, recorded in a Redis of its own.

The store's Redis is killed, restarted and has its connections dropped during a chaos run, so
what the checker counts lives elsewhere: a second redis-server that no fault touches. Worker
processes append to it; the checker reads it once everything has settled.

Entries (lists of JSON objects unless said otherwise, every one stamped with ``t``, the
``time.time()`` of the writer, and ``pid``):

- ``exec``: ``{"e": "start"|"end", "x", "run", "fn", "step", "key"}``, one pair per execution
  of a step's function (``x`` is a fresh execution id, returned in the step's result, so the
  stored checkpoint says which execution won; ``key`` is the concurrency key, if any);
- ``seen`` (hash ``<run>|<step>`` -> entry, first writer wins): the first moment handler code
  after the step got the step's result back, which happens only once its checkpoint is stored;
- ``crash``: ``{"point", "label"}``, a crash point that killed the process (written just before
  the ``SIGKILL``);
- ``task``: ``{"run"}``, an execution of the plain Celery task a ``run_task`` step sends;
- ``cron``: ``{"e": "pre"|"post", "task_id", "tick"}``, the cron task starting and finishing
  (``tick``: the fire time it is for, as the worker computes it at that moment);
- ``msg``: ``{"e": "pub"|"recv", "id", "task", "args"}``, every task message published (by
  any process) and received by a worker, to tell a message the broker lost;
- ``at-wait`` (set): order runs whose handler reached ``wait_for_event``;
- ``ready:<worker>`` (string): a worker announced it is ready.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis

PREFIX = "chaos"


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Ledger:
    """Append and read the ledger (one client per process; redis-py reconnects after fork)."""

    def __init__(self, url: str) -> None:
        self.r = redis.Redis.from_url(url)

    def _key(self, name: str) -> str:
        return f"{PREFIX}:{name}"

    def append(self, name: str, **fields: Any) -> None:
        entry = {**fields, "t": time.time(), "pid": os.getpid()}
        self.r.rpush(self._key(name), json.dumps(entry))

    def entries(self, name: str) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.r.lrange(self._key(name), 0, -1)]

    def first(self, name: str, field: str, **fields: Any) -> None:
        """Record ``fields`` under ``field`` of hash ``name`` unless something is there."""
        entry = {**fields, "t": time.time(), "pid": os.getpid()}
        self.r.hsetnx(self._key(name), field, json.dumps(entry))

    def firsts(self, name: str) -> dict[str, dict[str, Any]]:
        return {_s(k): json.loads(v) for k, v in self.r.hgetall(self._key(name)).items()}

    def add(self, name: str, member: str) -> None:
        self.r.sadd(self._key(name), member)

    def members(self, name: str) -> set[str]:
        return {_s(m) for m in self.r.smembers(self._key(name))}

    def mark_ready(self, worker: str) -> None:
        self.r.set(self._key(f"ready:{worker}"), time.time())

    def is_ready(self, worker: str) -> bool:
        return bool(self.r.exists(self._key(f"ready:{worker}")))
