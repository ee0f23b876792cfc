"""State stores. ``open_store(url)`` picks the implementation from the URL scheme."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery_steps.clock import Clock
from celery_steps.errors import ConfigurationError
from celery_steps.settings import REDIS_SCHEMES
from celery_steps.store.base import StateStore
from celery_steps.store.memory import MemoryStore


def open_store(url: str, *, namespace: str = "celery_steps", clock: Clock | None = None,
               options: Mapping[str, Any] | None = None,
               shards: int | None = None) -> StateStore:
    """A store for ``url``: ``memory://``, or Redis (``redis://``, ``rediss://``,
    ``redis+socket://``, ``sentinel://`` with ``options["master_name"]``,
    ``redis+cluster://``); Redis data is split ``shards`` ways (``redis_keys.py``). The memory
    store ages by ``clock`` (Redis by its own clock)."""
    if url.startswith("memory://"):
        return MemoryStore(clock)
    if url.startswith(REDIS_SCHEMES):
        from celery_steps.store.redis import RedisStore

        return RedisStore.from_url(url, namespace=namespace, options=options, shards=shards)
    raise ConfigurationError(
        f"unsupported store URL {url.split('://')[0]}://...: use redis://, rediss://, "
        "redis+socket://, sentinel://, redis+cluster:// or memory:// (setting steps_store_url)"
    )


__all__ = ["MemoryStore", "StateStore", "open_store"]
