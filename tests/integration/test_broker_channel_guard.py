"""The guard that keeps workers alive across Redis restarts, on a real Redis with kombu alone
(the worker-level test is test_redis_restart_worker.py)."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from kombu import Connection, Queue
from kombu.transport import redis as kombu_redis

from celery_steps import CelerySteps
from celery_steps.integration.resilience import (
    GUARD_MARK,
    BrokerResilienceStep,
    guard_detached_redis_channels,
)
from tests.conftest import RedisServer

log = logging.getLogger(__name__)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()  # its own server: the test kills it
    yield server
    server.stop()


def test_a_lost_connection_torn_down_like_the_worker_does_raises_only_connection_errors(
    own_redis: RedisServer,
) -> None:
    guard_detached_redis_channels()
    conn = Connection(own_redis.url())
    # given a consumer holding an unacked message (an acks-late task in flight), a second
    # channel like the worker's control channel, and both idle in a BRPOP
    tasks, control = Queue("tasks"), Queue("control")
    conn.Producer().publish({"n": 1}, routing_key="tasks", declare=[tasks])
    received: list[Any] = []
    conn.Consumer([tasks], callbacks=[lambda body, message: received.append(message)]).consume()
    conn.Consumer([control], channel=conn.channel()).consume()
    conn.drain_events(timeout=5)
    with contextlib.suppress(socket.timeout):
        conn.drain_events(timeout=0.2)
    errors = conn.connection_errors

    # when Redis dies and the connection is torn down as the worker's consumer does
    own_redis.proc.kill()
    own_redis.proc.wait(10)
    conn.collect(socket_timeout=1.0)
    conn.close()  # without the guard: AttributeError, and the worker shuts down

    # then the late ack of the message fails with an error the worker handles
    with pytest.raises(errors):
        received[0].ack()
    received[0].ack_log_error(log, errors)  # what Celery calls: logs and returns


def test_a_live_channel_still_acks_with_the_guard(redis_server: RedisServer,
                                                 namespace: str) -> None:
    guard_detached_redis_channels()
    queue = Queue(f"{namespace}-live")
    with Connection(redis_server.url()) as conn:
        conn.Producer().publish({"n": 1}, routing_key=queue.name, declare=[queue])
        received: list[Any] = []
        conn.Consumer([queue], callbacks=[lambda body, message: received.append(message)]).consume()
        conn.drain_events(timeout=5)

        received[0].ack()

        channel = conn.default_channel
        assert received[0].acknowledged
        assert not channel.client.hexists(channel.unacked_key, received[0].delivery_tag)


def test_installing_the_guard_twice_wraps_once() -> None:
    guard_detached_redis_channels()

    assert guard_detached_redis_channels() is False
    wrapped = kombu_redis.Channel._connparams.__wrapped__
    assert not getattr(wrapped, GUARD_MARK, False)


def test_celery_steps_adds_the_guard_to_the_worker() -> None:
    app = Celery("guarded", set_as_current=False)

    CelerySteps(app)

    assert BrokerResilienceStep in app.steps["worker"]
