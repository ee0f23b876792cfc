"""Redis-only guarantees of RedisStore: eviction policy, key layout, expiry, reconnects."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.crc import key_slot

from celery_steps.errors import ConfigurationError, StoreEvictionError
from celery_steps.store.base import Outcome, Suspension
from celery_steps.store.redis import RedisStore
from tests.store._support import (
    EVENT,
    LEASE_MS,
    NOW,
    RETENTION_MS,
    acquire,
    create,
    envelope_event,
    leased,
    new_id,
    suspended_waiting,
    waiter,
)

DONE = {"op": "run", "pos": 0, "status": "completed", "result": 1}


@pytest.fixture
def rstore(redis_server, namespace) -> Iterator[RedisStore]:
    s = RedisStore.from_url(redis_server.url(), namespace=namespace)
    yield s
    s.close()


def _keys(store: RedisStore) -> set[str]:
    return {k.decode() for k in store.r.scan_iter(match="*", count=1000)}


def _about(actual: int, expected: int, slack_ms: int = 5_000) -> bool:
    return expected - slack_ms < actual <= expected


def test_refuses_to_start_on_a_server_that_evicts_keys(redis_server, namespace) -> None:
    admin = RedisStore.from_url(redis_server.url(), namespace=namespace)
    original = admin.r.config_get("maxmemory-policy")["maxmemory-policy"]
    try:
        admin.r.config_set("maxmemory-policy", "allkeys-lru")
        with pytest.raises(ConfigurationError, match="maxmemory-policy"):
            RedisStore.from_url(redis_server.url(), namespace=namespace)
    finally:
        admin.r.config_set("maxmemory-policy", original)
        admin.close()


def test_starts_on_a_noeviction_server(redis_server, namespace) -> None:
    admin = RedisStore.from_url(redis_server.url(), namespace=namespace)
    try:
        assert admin.r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        RedisStore.from_url(redis_server.url(), namespace=namespace).close()
    finally:
        admin.close()


def test_every_key_of_a_run_shares_its_hash_tag_and_the_namespace(rstore) -> None:
    # given a run with metadata, steps, events and collected event ids
    run_id = create(rstore, events=[{"id": "e1", "name": "t"}], event_ids=["e1"],
                    pending=f"{rstore.ns}:gate:pend:f:")
    token = "tok-1@p"
    acquire(rstore, run_id, token, now=NOW, lease_ms=LEASE_MS)
    rstore.save_step(run_id, token, "fetch", DONE)
    # then every key naming the run carries the namespace and its shard's hash tag
    run_keys = {k for k in _keys(rstore) if run_id in k}
    meta = rstore.run_key(run_id)
    assert meta.startswith(f"{rstore.ns}:{{s") and meta.endswith(f"}}:run:{run_id}")
    assert run_keys == {meta, meta + ":steps", meta + ":events", meta + ":eids"}
    # and they all hash to one cluster slot, with the shard's timers
    assert len({key_slot(k.encode()) for k in run_keys}) == 1
    assert key_slot(rstore.keys.run_keys(run_id).timers.encode()) == key_slot(meta.encode())


def test_every_key_written_starts_with_the_namespace(rstore) -> None:
    before = _keys(rstore)
    # given a full tour: event, run with waiter and timer, steps, lease, routing
    event_id = new_id("evt")
    rstore.put_event(event_id, "{}", route_at=NOW, ttl_ms=60_000)
    run_id, _ = suspended_waiting(rstore)
    other = waiter(run_id, "w2", path="data.order", value=7)
    create(rstore, waiters=(other,), start_by=NOW)
    rstore.complete_routing(event_id, [run_id], ttl_ms=60_000)
    rstore.signal()
    new = _keys(rstore) - before
    assert new, "nothing was written"
    assert all(k.startswith(f"{rstore.ns}:") for k in new), sorted(new)


def test_finish_sets_the_retention_ttl_on_the_run_keys(rstore) -> None:
    run_id, token = leased(rstore)
    rstore.save_step(run_id, token, "fetch", DONE)
    assert rstore.finish(run_id, token, Outcome("completed", NOW + 1, "1"),
                         retention_ms=RETENTION_MS) is True
    rk = rstore.keys.run_keys(run_id)
    meta, steps, events = rk.meta, rk.steps, rk.events
    assert _about(rstore.r.pttl(meta), RETENTION_MS)
    assert _about(rstore.r.pttl(steps), RETENTION_MS)
    assert _about(rstore.r.pttl(events), RETENTION_MS)
    assert rstore.r.hget(meta, "holder") is None


def test_a_live_run_has_no_ttl(rstore) -> None:
    run_id, token = leased(rstore)
    rstore.save_step(run_id, token, "fetch", DONE)
    rk = rstore.keys.run_keys(run_id)
    meta, steps = rk.meta, rk.steps
    assert rstore.r.pttl(meta) == -1
    assert rstore.r.pttl(steps) == -1


def test_cancel_sets_the_retention_ttl_on_the_run_keys(rstore) -> None:
    run_id, token = leased(rstore)
    rstore.save_step(run_id, token, "fetch", DONE)
    rstore.cancel(run_id, now=NOW + 1, reason="stop", retention_ms=60_000)
    rk = rstore.keys.run_keys(run_id)
    meta, steps, events = rk.meta, rk.steps, rk.events
    assert _about(rstore.r.pttl(meta), 60_000)
    assert _about(rstore.r.pttl(steps), 60_000)
    assert _about(rstore.r.pttl(events), 60_000)


def test_put_event_dedupe_key_expires_after_ttl(rstore) -> None:
    event_id = new_id("evt")
    rstore.put_event(event_id, "{}", route_at=NOW, ttl_ms=86_400_000)
    assert _about(rstore.r.pttl(rstore.keys.event(event_id)), 86_400_000)


def test_routed_runs_expire_after_ttl(rstore) -> None:
    event_id = new_id("evt")
    rstore.put_event(event_id, "{}", route_at=NOW, ttl_ms=86_400_000)
    rstore.complete_routing(event_id, ["run-a"], ttl_ms=3_600_000)
    assert _about(rstore.r.pttl(rstore.keys.event(event_id) + ":runs"), 3_600_000)


def test_an_expired_dedupe_key_accepts_the_event_id_again(rstore) -> None:
    event_id = new_id("evt")
    rstore.put_event(event_id, '"first"', route_at=NOW, ttl_ms=60_000)
    rstore.r.delete(rstore.keys.event(event_id))  # what expiry does
    assert rstore.put_event(event_id, '"second"', route_at=NOW, ttl_ms=60_000) is True
    assert envelope_event(rstore.get_event(event_id)) == '"second"'


def test_a_run_survives_a_client_reconnect(rstore) -> None:
    # given a leased run
    run_id, token = leased(rstore)
    # when every connection of the pool is dropped mid-run
    rstore.r.connection_pool.disconnect()
    # then the store keeps working on the same run
    assert rstore.save_step(run_id, token, "fetch", DONE) == ("ok", None)
    rstore.r.connection_pool.disconnect()
    assert rstore.suspend(run_id, token, Suspension("queued", NOW + 10)) is False
    rstore.r.connection_pool.disconnect()
    status, record = acquire(rstore, run_id, "tok-2", now=NOW + 20, lease_ms=LEASE_MS)
    assert status == "ok"
    assert record.steps == {"fetch": DONE}


def test_scripts_are_reloaded_after_a_script_flush(rstore) -> None:
    # given a server that lost its script cache (e.g. a restart)
    run_id, token = leased(rstore)
    rstore.r.script_flush()
    # then scripted calls still work
    assert rstore.save_step(run_id, token, "fetch", DONE) == ("ok", None)
    assert rstore.finish(run_id, token, Outcome("completed", NOW + 1, "1"),
                         retention_ms=RETENTION_MS) is True


def test_waiter_index_entries_are_removed_when_the_run_ends(rstore) -> None:
    run_id, w = suspended_waiting(rstore)
    rstore.cancel(run_id, now=NOW + 1, reason="stop", retention_ms=RETENTION_MS)
    assert rstore.r.hlen(f"{rstore.ns}:w:{EVENT}") == 0
    assert rstore.find_waiters(w.event_name, {}) == []


def test_eviction_switched_on_at_run_time_stops_every_write_until_it_is_off(
    redis_server, namespace, caplog
) -> None:
    # given a store re-reading the policy often, on a server that does not evict
    admin = RedisStore.from_url(redis_server.url(), namespace=namespace)
    store = RedisStore.from_url(redis_server.url(), namespace=namespace)
    store.guard.recheck_s = 0.0
    run_id, token = leased(store)
    original = admin.r.config_get("maxmemory-policy")["maxmemory-policy"]
    try:
        # when an operator switches eviction on while runs are in flight
        admin.r.config_set("maxmemory-policy", "allkeys-lru")
        # then the next write is refused, naming the problem, and it is logged loudly
        with caplog.at_level("CRITICAL", logger="celery_steps.store"), pytest.raises(
                StoreEvictionError, match="maxmemory-policy 'allkeys-lru'"):
            store.save_step(run_id, token, "fetch", DONE)
        assert "now evicts keys" in caplog.text
        assert store.load_run(run_id).steps == {}
        # and once it is off again, writes go through
        admin.r.config_set("maxmemory-policy", original)
        assert store.save_step(run_id, token, "fetch", DONE) == ("ok", None)
    finally:
        admin.r.config_set("maxmemory-policy", original)
        admin.close()
        store.close()


@pytest.mark.parametrize("status", [None, "queued"])
def test_a_page_from_a_cursor_loads_only_the_runs_it_returns(rstore, monkeypatch,
                                                            status: str | None) -> None:
    # given 400 runs of two functions
    for i in range(400):
        create(rstore, function_id=f"fn/{i % 2}", created_at=NOW + i)
    first = rstore.list_runs(function_id=None, status=status, limit=150)
    loaded: list[int] = []
    real = rstore._load_many
    monkeypatch.setattr(rstore, "_load_many", lambda ids: loaded.append(len(ids)) or real(ids))
    # when the next page of 150 is read from the last run of the first
    page = rstore.list_runs(function_id=None, status=status, limit=150,
                            before=(first[-1].created_at, first[-1].id))
    # then it holds the next 150 runs, and only they were loaded
    assert [r.created_at for r in page] == list(range(NOW + 249, NOW + 99, -1))
    assert sum(loaded) == 150
