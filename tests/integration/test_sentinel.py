"""Sentinel as the store: the master dies, the replica is promoted, every run finishes.

A real master, replica and three Sentinels (tests/servers.py); the broker is a separate
Redis, so only the store fails over. Checkpointed steps never run again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from celery_steps import Context
from tests.conftest import RedisServer, redis_server_executable, wait_until
from tests.integration.apps import redis_app, running_worker
from tests.servers import SentinelSet

pytestmark = pytest.mark.slow


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    group = SentinelSet(redis_server_executable())
    try:
        wait_until(lambda: _replicas_seen(group), timeout=20,
                   message="the sentinels to see the replica")
        yield group
    finally:
        group.stop()


def _replicas_seen(group: SentinelSet) -> bool:
    client = redis.Redis(port=group.sentinel_ports[0])
    try:
        return bool(client.sentinel_slaves(group.master_name))
    except redis.RedisError:
        return False
    finally:
        client.close()


def _caught_up(master: redis.Redis) -> bool:
    """Every write the master took so far has reached its replica."""
    info = master.info("replication")
    replica = info.get("slave0")
    return bool(replica) and int(replica["offset"]) >= int(info["master_repl_offset"])


def test_running_sleeping_and_waiting_runs_finish_after_the_master_fails_over(
    sentinels: SentinelSet, redis_server: RedisServer,
) -> None:
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def bump(name: str) -> int:
        with lock:
            counts[name] = counts.get(name, 0) + 1
            return counts[name]

    # given a store behind Sentinel (the broker elsewhere)
    app, steps = redis_app(redis_server.url(), redis_server.url(),
                           steps_store_url=sentinels.url(),
                           steps_store_transport_options={"master_name": "mymaster"})

    @steps.function(id="busy", trigger="t/busy", retries=2)
    def busy(ctx: Context) -> int:
        ctx.step.run("first", lambda: bump("busy-first"))
        ctx.step.run("long", lambda: (bump("busy-long") and time.sleep(3)) or 1)
        return int(ctx.step.run("last", lambda: bump("busy-last")))

    @steps.function(id="napper", trigger="t/napper", retries=2)
    def napper(ctx: Context) -> int:
        ctx.step.run("first", lambda: bump("napper-first"))
        ctx.step.sleep("nap", "4s")
        return int(ctx.step.run("last", lambda: bump("napper-last")))

    @steps.function(id="patient", trigger="t/patient", retries=2)
    def patient(ctx: Context) -> Any:
        ctx.step.run("first", lambda: bump("patient-first"))
        reply = ctx.step.wait_for_event("reply", event="t/reply", timeout="1m")
        ctx.step.run("last", lambda: bump("patient-last"))
        return None if reply is None else reply.data

    master = redis.Redis(port=sentinels.master_port)
    with running_worker(app):
        # given one run inside a long step, one sleeping, one waiting
        runs = [steps.runs_for_event(steps.send(name)[0])[0].id
                for name in ("t/busy", "t/napper", "t/patient")]
        wait_until(lambda: counts.get("busy-long") == 1, message="the long step to start")
        wait_until(lambda: steps.get_run(runs[1]).status == "sleeping", message="the sleep")
        wait_until(lambda: steps.get_run(runs[2]).status == "waiting", message="the wait")
        wait_until(lambda: _caught_up(master), message="the replica to catch up")

        # when the master dies and Sentinel promotes the replica
        sentinels.kill_master()
        wait_until(lambda: sentinels.master_port_now() == sentinels.replica_port, timeout=30,
                   message="the replica's promotion")
        steps.send("t/reply", data={"text": "hello"})

        # then every run finishes
        finished = [steps.wait_for_run(run_id, timeout=40) for run_id in runs]

    assert [r.status for r in finished] == ["completed"] * 3
    assert finished[2].output == {"text": "hello"}
    # and no step ran twice
    assert all(n == 1 for n in counts.values()), counts
    assert len(counts) == 7
