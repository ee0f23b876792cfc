"""Keep Celery workers alive when Redis, as the broker, restarts while acks-late tasks run.

With kombu's Redis transport (5.x, up to at least 5.7.0), a worker that loses its broker
connection tears the connection down, then reconnects. A channel of the old connection can
still be asked to talk to Redis afterwards: when it is finally closed it restores its
unacknowledged messages, and a task that was running across the reconnect acknowledges its
message on it. kombu then builds a Redis client for that channel from its transport, which the
teardown already detached, and raises ``AttributeError: 'NoneType' object has no attribute
'hostname'`` (or ``'client'``). Celery treats connection errors there as expected and goes on,
but an ``AttributeError`` is an "Unrecoverable error": the worker shuts down. Function tasks
are always acks-late, so without this guard a Redis restart stops every busy worker.

The guard makes such a channel raise ``redis.exceptions.ConnectionError`` instead, which is
what Celery and kombu already handle on these paths: the close is skipped, the late ack is
logged as failed ("Couldn't ack"), and the message stays in Redis's unacked set, so the broker
delivers it again after ``visibility_timeout`` (a replay of an ended run does nothing). Nothing
else changes: the guard only acts where kombu would raise ``AttributeError``.
See docs/operations.md, "Redis restarts and outages".
"""

from __future__ import annotations

import functools
from typing import Any

from celery import bootsteps

GUARD_MARK = "_celery_steps_detached_channel_guard"
DETACHED = ("this Redis broker channel belongs to a connection that was closed after a "
            "connection loss; it cannot reach Redis any more")


def guard_detached_redis_channels() -> bool:
    """Make kombu Redis channels whose connection is gone raise a connection error.

    Idempotent; returns True when this call installed the guard.
    """
    from kombu.transport import redis as kombu_redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    channel_cls: Any = kombu_redis.Channel
    original = channel_cls._connparams
    if getattr(original, GUARD_MARK, False):
        return False

    @functools.wraps(original)
    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        transport = self.connection
        if transport is None or transport.client is None:
            raise RedisConnectionError(DETACHED)
        return original(self, asynchronous)

    setattr(_connparams, GUARD_MARK, True)
    channel_cls._connparams = _connparams
    return True


class BrokerResilienceStep(bootsteps.Step):  # type: ignore[misc]
    """Installs the guard when a worker is created, before it connects to the broker."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        guard_detached_redis_channels()
