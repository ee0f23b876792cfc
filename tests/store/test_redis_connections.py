"""A thread's script calls share one held connection: none is leaked by threads that end,
and a forked child never writes on its parent's socket."""

from __future__ import annotations

import gc
import multiprocessing
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from celery_steps.store.redis import RedisStore
from tests.store._support import NOW, create, leased

DONE = {"op": "run", "pos": 0, "status": "completed", "result": 1}


@pytest.fixture
def rstore(redis_server, namespace) -> Iterator[RedisStore]:
    s = RedisStore.from_url(redis_server.url(), namespace=namespace)
    yield s
    s.close()


def open_connections(store: RedisStore) -> int:
    """Connections this store's pool has open."""
    pool = store.r.connection_pool
    return len(pool._available_connections) + len(pool._in_use_connections)  # type: ignore[attr-defined]


def test_a_threads_steps_reuse_one_connection(rstore: RedisStore) -> None:
    # given a run held by this thread
    run_id, holder = leased(rstore)
    before = open_connections(rstore)
    # when it checkpoints 30 steps
    for n in range(30):
        assert rstore.save_step(run_id, holder, f"s{n}", DONE)[0] == "ok"
    # then they went through one connection, at most one more than before
    assert open_connections(rstore) <= before + 1
    assert len(rstore.load_run(run_id).steps) == 30  # type: ignore[union-attr]


def test_threads_that_end_give_their_connection_back(rstore: RedisStore) -> None:
    # given 40 short-lived threads, one after the other, each creating a run
    def one() -> None:
        create(rstore, start_by=NOW)

    for _ in range(40):
        thread = threading.Thread(target=one)
        thread.start()
        thread.join()
        gc.collect()
    # then their connections went back to the pool and were reused, not left open
    assert open_connections(rstore) <= 3


def _child_checkpoints(store: RedisStore, run_id: str, holder: str,
                       done: multiprocessing.Queue[str]) -> None:
    replies = {store.save_step(run_id, holder, f"child-{n}", DONE)[0] for n in range(300)}
    done.put(",".join(sorted(replies)))


def test_a_forked_child_uses_its_own_connection(rstore: RedisStore) -> None:
    # given a parent whose thread holds a connection
    run_id, holder = leased(rstore)
    assert rstore.save_step(run_id, holder, "in-parent", DONE)[0] == "ok"
    # when a forked child checkpoints 300 steps while the parent checkpoints 300 more
    ctx = multiprocessing.get_context("fork")
    done: multiprocessing.Queue[str] = ctx.Queue()
    child = ctx.Process(target=_child_checkpoints, args=(rstore, run_id, holder, done))
    child.start()
    replies = {rstore.save_step(run_id, holder, f"parent-{n}", DONE)[0] for n in range(300)}
    child.join(10)
    # then both got their own replies: no answer went to the other process
    assert child.exitcode == 0 and done.get(timeout=5) == "ok"
    assert replies == {"ok"}
    steps = set(rstore.load_run(run_id).steps)  # type: ignore[union-attr]
    assert {f"child-{n}" for n in range(300)} | {f"parent-{n}" for n in range(300)} <= steps


def test_waiting_for_an_end_longer_than_the_socket_timeout_just_returns(
        redis_server, namespace) -> None:
    # given a client whose socket timeout is shorter than the wait (redis-py 8: 5 s default)
    client = redis.Redis.from_url(redis_server.url(), socket_timeout=0.4)
    store = RedisStore(client, namespace=namespace)
    run_id, _ = leased(store)
    try:
        # when a caller waits 1.5 s for a run that does not end
        started = time.monotonic()
        store.wait_ended(run_id, 1.5)
        # then the wait returns (the caller looks again) instead of a dead-connection error
        assert time.monotonic() - started < 1.5
    finally:
        store.close()
