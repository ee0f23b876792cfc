"""The eviction guard of the Redis store: no write while the server may evict keys."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import redis
from redis.exceptions import ResponseError

from celery_steps.errors import StoreEvictionError
from celery_steps.store.redis_client import is_cluster

log = logging.getLogger("celery_steps.store")
SAFE_POLICIES = ("noeviction",)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_config(client: redis.Redis, name: str) -> list[str]:
    """A CONFIG GET value: one per master of a cluster, else one."""
    if is_cluster(client):
        replies: dict[str, Any] = client.config_get(  # type: ignore[call-arg, assignment]
            name, target_nodes="primaries")
        return [_s(reply.get(name, "")) for reply in replies.values()]
    return [_s(client.config_get(name).get(name, ""))]


class EvictionGuard:
    """Refuses writes while the server evicts keys (``maxmemory-policy``), re-checked at
    most every ``recheck_s``: an operator switching eviction on at run time is noticed by
    every process within that, logged loudly, and nothing half written can vanish."""

    recheck_s = 30.0

    def __init__(self, client: redis.Redis) -> None:
        self.r = client
        self.problem: str | None = None
        self._checked_at = -math.inf
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise :class:`StoreEvictionError` while the server evicts keys."""
        if time.monotonic() - self._checked_at >= self.recheck_s:
            with self._lock:
                if time.monotonic() - self._checked_at >= self.recheck_s:
                    self._read_policy()
                    self._checked_at = time.monotonic()
        if self.problem is not None:
            raise StoreEvictionError(self.problem)

    def _read_policy(self) -> None:
        try:
            policies = read_config(self.r, "maxmemory-policy")
        except ResponseError:  # CONFIG disabled (managed Redis): say so, trust the operator
            log.warning("cannot read maxmemory-policy; make sure it is 'noeviction'")
            return
        policy = next((p for p in policies if p and p not in SAFE_POLICIES), "")
        evicting = bool(policy)
        if evicting and self.problem is None:
            log.critical("the Redis behind steps_store_url now evicts keys (maxmemory-policy "
                         "%r): celery-steps writes nothing until it is 'noeviction' again",
                         policy)
        elif not evicting and self.problem is not None:
            log.warning("maxmemory-policy is %r again: celery-steps writes again", policy)
        self.problem = None if not evicting else (
            f"the Redis behind steps_store_url has maxmemory-policy {policy!r}, which evicts "
            "keys: durable run state could vanish, so celery-steps refuses to write. Set "
            "maxmemory-policy to 'noeviction' (or point steps_store_url at a Redis that has it)")


class GuardedScript:
    """A Lua script that runs only while the server does not evict keys."""

    def __init__(self, script: Any, guard: EvictionGuard) -> None:
        self.inner, self._guard = script, guard

    def __call__(self, keys: list[Any], args: list[Any]) -> Any:
        self._guard.check()
        return self.inner(keys=keys, args=args)
