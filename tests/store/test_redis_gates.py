"""Redis-only guarantees of the flow-control gates: a run's scripts never touch a gate's keys
and the gate scripts never touch a run's (so both fit Redis Cluster's one-slot rule), a place
taken by a process that died before the run's script ran expires with its lease, and runs
stored by an earlier version keep their gates."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from redis.crc import key_slot

from celery_steps.store.base import ConcurrencyGate, Outcome, Suspension, ThrottleGate
from celery_steps.store.redis import RedisStore
from celery_steps.store.redis_gates import queue_keys
from tests.conftest import wait_until
from tests.store._support import LEASE_MS, NOW, RETENTION_MS, acquire, create, new_id

RUN_SCRIPTS = ("create_run", "acquire", "renew", "suspend", "finish", "cancel", "release")
GATE_SCRIPTS = ("gate_take", "gate_free", "throttle")


@pytest.fixture
def rstore(redis_server, namespace) -> Iterator[RedisStore]:
    s = RedisStore.from_url(redis_server.url(), namespace=namespace)
    yield s
    s.close()


def gate_key(store: RedisStore, name: str) -> str:
    return f"{store.ns}:gate:conc:{{fn:shop/checkout:{name}}}"


class Monitor:
    """The keys each script of ``store`` wrote or read while the monitor ran: script name ->
    first argument (the key) of every command it ran."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.lines: list[dict] = []
        self.stop = f"{store.ns}:monitor-stop"
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def _listen(self) -> None:
        with self.store.r.monitor() as monitor:
            for line in monitor.listen():
                self.lines.append(line)
                if self.stop in line["command"]:
                    return

    def __enter__(self) -> Monitor:
        self._thread.start()
        wait_until(lambda: self._probe(), message="the monitor to listen")
        return self

    def _probe(self) -> bool:
        self.store.r.get(f"{self.store.ns}:monitor-probe")
        return any("monitor-probe" in line["command"] for line in self.lines)

    def __exit__(self, *exc: object) -> None:
        self.store.r.get(self.stop)
        self._thread.join(10)

    def script_calls(self) -> list[tuple[str, set[str]]]:
        """Each script call seen: (script name, the keys its commands named first)."""
        names = {script.inner.sha: name for name, script in self.store._scripts.items()}
        calls: list[tuple[str, set[str]]] = []
        inside = False
        for line in self.lines:
            words = line["command"].split()
            if line["client_type"] != "lua":
                inside = words[0].upper() == "EVALSHA" and words[1] in names
                if inside:
                    calls.append((names[words[1]], set()))
            elif inside and len(words) > 1:
                calls[-1][1].add(words[1])
        return [(name, keys) for name, keys in calls if keys]  # (not a NOSCRIPT retry)


def test_run_scripts_touch_no_gate_key_and_gate_scripts_no_run_key(rstore) -> None:
    # given runs with two concurrency gates and a throttle, through every way a run goes
    gates = (ConcurrencyGate(gate_key(rstore, "a"), 1),
             ConcurrencyGate(gate_key(rstore, "b"), 2))
    throttle = ThrottleGate(f"{rstore.ns}:gate:throttle:{{fn:shop/checkout:}}", 2, 60_000, 2)
    with Monitor(rstore) as monitor:
        first = create(rstore, concurrency=gates, throttle=throttle)
        second = create(rstore, concurrency=gates, throttle=throttle)
        assert acquire(rstore, first, "t1")[0] == "ok"
        assert acquire(rstore, second, "t2")[0] == "limited"
        assert rstore.renew(first, "t1", now=NOW + 1, lease_ms=LEASE_MS)
        rstore.suspend(first, "t1", Suspension("sleeping", NOW + 10))
        assert acquire(rstore, second, "t2", now=NOW + 10)[0] == "ok"
        rstore.cancel(second, now=NOW + 20, reason="no", retention_ms=RETENTION_MS)
        assert acquire(rstore, first, "t3", now=NOW + 20)[0] == "ok"
        rstore.release(first, "t3")
        assert acquire(rstore, first, "t4", now=NOW + 30)[0] == "ok"
        rstore.finish(first, "t4", Outcome("completed", NOW + 40, "1"), retention_ms=RETENTION_MS)
        rstore.join_throttle(throttle, function_id="f", run_id=new_id(), score=NOW, now=NOW)

    calls = monitor.script_calls()
    # then every script ran, and none crossed from a run's keys to a gate's or back
    assert {name for name, _ in calls} >= set(RUN_SCRIPTS + GATE_SCRIPTS)
    for name, keys in calls:
        if name in RUN_SCRIPTS:
            assert not [k for k in keys if ":gate:conc:" in k or ":gate:throttle:" in k], name
        if name in GATE_SCRIPTS:  # and each gate script call stays in one slot
            assert not [k for k in keys if ":run:" in k], name
            assert len({key_slot(k.encode()) for k in keys}) == 1, (name, keys)


def test_a_place_taken_by_a_process_that_died_before_the_run_script_expires(rstore) -> None:
    # given a place taken in the gate (the first phase of acquire) for a run whose process
    # died before the run's own script ran
    gate = ConcurrencyGate(gate_key(rstore, "crash"), 1)
    orphan = f"r|shop/checkout|{new_id()}"
    assert rstore._scripts["gate_take"](
        keys=queue_keys(gate.key), args=[orphan, NOW, LEASE_MS, 1, NOW, NOW + 1]) == b"taken"
    waiting = create(rstore, concurrency=(gate,))

    # then the gate is full until that lease passes, and free after it
    assert acquire(rstore, waiting, "tok", now=NOW + LEASE_MS - 1)[0] == "limited"
    assert acquire(rstore, waiting, "tok", now=NOW + LEASE_MS)[0] == "ok"


def test_a_run_stored_with_the_older_concurrency_field_keeps_its_gate(rstore) -> None:
    # given a run written by an earlier version: 'conc' = '<limit>|<gate>'
    gate = gate_key(rstore, "legacy")
    old, other = create(rstore), create(rstore, concurrency=(ConcurrencyGate(gate, 1),))
    rstore.r.hset(rstore.run_key(old), "conc", f"1|{gate}")

    # then it takes its place, and gives it back when it ends
    assert acquire(rstore, old, "t-old")[0] == "ok"
    assert acquire(rstore, other, "t-other")[0] == "limited"
    rstore.finish(old, "t-old", Outcome("completed", NOW + 1, "1"), retention_ms=RETENTION_MS)
    assert acquire(rstore, other, "t-other", now=NOW + 2)[0] == "ok"


def test_a_gate_queue_expires_after_its_last_waiter_would_be_forgotten(rstore) -> None:
    # given a waiter queued in a full gate
    gate = ConcurrencyGate(gate_key(rstore, "ttl"), 1)
    assert acquire(rstore, create(rstore, concurrency=(gate,)), "t1")[0] == "ok"
    assert acquire(rstore, create(rstore, concurrency=(gate,)), "t2")[0] == "limited"

    # then its queue keys carry a time to live (they do not outlive their waiters)
    for key in queue_keys(gate.key)[1:]:
        assert rstore.r.pttl(key) > 0, key


def test_waking_the_head_of_a_queue_signals_a_blocked_poller(rstore) -> None:
    gate = ConcurrencyGate(gate_key(rstore, "wake"), 1)
    running, waiting = (create(rstore, concurrency=(gate,)) for _ in range(2))
    assert acquire(rstore, running, "t1")[0] == "ok"
    assert acquire(rstore, waiting, "t2")[0] == "limited"
    rstore.wait_for_signal(0.05)  # subscribed; earlier signals consumed

    started = time.monotonic()
    rstore.suspend(running, "t1", Suspension("sleeping", NOW + 60_000))
    rstore.wait_for_signal(5)

    assert time.monotonic() - started < 4
    member = f"r|shop/checkout|{waiting}"
    assert rstore.r.zscore(rstore.keys.timers(rstore.keys.member_shard(member)), member) == 0


def test_an_event_joins_a_batch_whose_run_is_created_just_after_it_claimed_the_gate(
    rstore,
) -> None:
    # given a router that claimed a batch gate and is about to create its run
    gate = f"{rstore.ns}:gate:pend:shop/checkout:"
    run_id = new_id()
    now = int(time.time() * 1000)
    rstore._open_pending(gate, run_id, now)
    creator = threading.Timer(0.05, lambda: create(
        rstore, run_id, events=[{"id": "e1", "name": "t"}], event_ids=["e1"], pending=gate))
    creator.start()
    try:
        # when another event is routed to the gate meanwhile
        joined = rstore.join_pending(gate, {"id": "e2", "name": "t"}, mode="batch", now=now,
                                     max_size=10, period_ms=60_000, timeout_ms=60_000)
    finally:
        creator.join()
    # then it joins that run (it waited for it) and the gate still names it
    assert joined == (run_id, False)
    assert rstore.r.get(gate).decode().startswith(run_id + "|")
    record = rstore.load_run(run_id)
    assert record is not None and len(record.events) == 2


def test_a_gate_whose_creator_died_before_creating_its_run_is_reopened(rstore) -> None:
    # given a batch gate claimed long ago for a run that never came
    gate = f"{rstore.ns}:gate:pend:shop/checkout:"
    now = int(time.time() * 1000)
    rstore._open_pending(gate, "run-never", now - 120_000)
    # when an event is routed to it, then no run collects (the caller opens a new one)
    assert rstore.join_pending(gate, {"id": "e3", "name": "t"}, mode="batch", now=now,
                               max_size=10, period_ms=60_000, timeout_ms=60_000) is None
    assert rstore.r.get(gate) is None
