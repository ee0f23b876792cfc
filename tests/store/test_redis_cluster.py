"""Redis Cluster: every script declares the keys it touches, a run's keys share its shard's
slot, the shards spread over every master, and the shard count is fixed per namespace."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery

import celery_steps.store.redis as redis_store
from celery_steps import (
    BatchEvents,
    CancelOn,
    CelerySteps,
    Concurrency,
    Context,
    Debounce,
    Singleton,
    Throttle,
)
from celery_steps.errors import ConfigurationError
from celery_steps.store.redis import RedisStore
from celery_steps.store.redis_client import cluster_client
from celery_steps.testing import fire_timers
from tests.conftest import AgingClock, RedisServer
from tests.servers import RedisCluster
from tests.store._support import NOW, create, new_id, waiter

# Prepended to every script by the first test: a `redis` local that shadows the real one and
# refuses a command on a key the caller did not pass in KEYS.
DECLARED_KEYS_ONLY = """
local real_redis = redis
local declared = {}
for _, key in ipairs(KEYS) do declared[key] = true end
local KEYLESS = {TIME = true, PUBLISH = true}
local ALL_KEYS = {DEL = true, EXISTS = true, UNLINK = true}
local function check(cmd, ...)
  local args = {...}
  local name = string.upper(cmd)
  if KEYLESS[name] then return end
  local last = 1
  if ALL_KEYS[name] then last = #args end
  for i = 1, last do
    if not declared[args[i]] then
      error('undeclared key ' .. tostring(args[i]) .. ' in ' .. name)
    end
  end
end
local redis = setmetatable({
  call = function(cmd, ...) check(cmd, ...) return real_redis.call(cmd, ...) end,
  pcall = function(cmd, ...) check(cmd, ...) return real_redis.pcall(cmd, ...) end,
}, {__index = real_redis})
"""


@pytest.fixture
def strict_scripts(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = redis_store._load_scripts
    monkeypatch.setattr(redis_store, "_load_scripts", lambda: {
        name: DECLARED_KEYS_ONLY + source for name, source in loaded().items()})


def test_every_script_declares_every_key_it_touches(
    strict_scripts: None, redis_server: RedisServer, namespace: str,
) -> None:
    # given a store whose scripts fail on any key not passed in KEYS
    clock = AgingClock()
    app = Celery(f"declared-{namespace}", set_as_current=False)
    app.conf.update(task_always_eager=True, steps_store_url=redis_server.url(),
                    steps_namespace=namespace, steps_timer_poller=False, steps_store_shards=4,
                    steps_retry_backoff_base=0.01)
    steps = CelerySteps(app, clock=clock)
    clock.redis = steps.runtime.store  # type: ignore[assignment]

    @steps.function(id="child", trigger="c/never")
    def child(ctx: Context) -> int:
        return 2

    @steps.function(id="tour", trigger="c/tour", cancel_on=[CancelOn("c/stop", match="data.n")],
                    concurrency=[Concurrency(2, key="event.data.n")],
                    throttle=Throttle(100, "1m"))
    def tour(ctx: Context) -> Any:
        ctx.step.run("a", lambda: 1)
        ctx.step.sleep("nap", "1h")
        ctx.step.invoke("call", function=child)
        ctx.step.parallel([lambda: ctx.step.run("p1", lambda: 1),
                           lambda: ctx.step.run("p2", lambda: 2)])
        return ctx.step.wait_for_event("w", event="c/answer", timeout="1d", match="data.n")

    @steps.function(id="solo", trigger="c/solo", singleton=Singleton(mode="cancel"))
    def solo(ctx: Context) -> None:
        ctx.step.sleep("nap", "1h")

    @steps.function(id="calm", trigger="c/calm", debounce=Debounce("1m"))
    def calm(ctx: Context) -> int:
        return len(ctx.events)

    @steps.function(id="pack", trigger="c/pack", batch_events=BatchEvents(2, "1m"))
    def pack(ctx: Context) -> int:
        return len(ctx.events)

    # when every kind of run goes through every kind of step and end
    for n in range(4):
        steps.send("c/tour", {"n": n})
    steps.send("c/solo")
    steps.send("c/solo")
    for _ in range(3):
        steps.send("c/calm")
        steps.send("c/pack")
    for _ in range(4):
        clock.advance(3600)
        fire_timers(steps)
    assert len(steps.list_runs(function_id="tour", status="waiting", limit=10)) == 4
    steps.send("c/answer", {"n": 1})
    steps.send("c/stop", {"n": 2})
    steps.cancel(steps.list_runs(function_id="tour", status="waiting", limit=1)[0].id)

    # then every script ran (none raised) and the runs went where they should
    runs = steps.list_runs(limit=100)
    assert {r.function_id for r in runs} >= {"tour", "child", "solo", "calm", "pack"}
    assert sorted(r.status for r in runs if r.function_id == "tour") == [
        "cancelled", "cancelled", "completed", "waiting"]
    answered = steps.list_runs(function_id="tour", status="completed", limit=10)
    assert [r.output["name"] for r in answered] == ["c/answer"]


def test_the_shards_spread_over_every_master(redis_cluster: RedisCluster,
                                             namespace: str) -> None:
    # given a store on a 3-master cluster, with its default shard count
    store = RedisStore.from_url(redis_cluster.url(), namespace=namespace)
    try:
        assert store.keys.shards == 16
        # when runs, timers, waiters and events are written
        for n in range(64):
            run_id = new_id()
            create(store, run_id, start_by=NOW + n, waiters=(waiter(run_id, f"w{n}"),))
            store.put_event(f"evt-{namespace}-{n}", "{}", route_at=NOW, ttl_ms=60_000)

        # then every master holds runs, timers and events of the namespace
        per_master: dict[str, set[str]] = {}
        for port in redis_cluster.ports:
            node = redis.Redis(port=port)
            try:
                per_master[str(port)] = {
                    k.decode().split(":", 2)[2].split(":")[0]
                    for k in node.scan_iter(match=f"{namespace}:{{s*", count=1000)}
            finally:
                node.close()
        assert all({"run", "timers", "evt", "w"} <= kinds for kinds in per_master.values()), \
            per_master
        # and the pollers' view covers every shard
        assert len(store.claim_due(now=NOW + 100, limit=1000, redo_ms=1000)) == 64 + 64
    finally:
        store.close()


def test_a_shard_count_other_than_the_data_was_written_with_is_refused(
    redis_server: RedisServer, namespace: str,
) -> None:
    # given a namespace written with 4 shards
    RedisStore.from_url(redis_server.url(), namespace=namespace, shards=4).close()
    # when a process configured with 8 opens it, then it is refused, saying what to set
    with pytest.raises(ConfigurationError, match="steps_store_shards = 4"):
        RedisStore.from_url(redis_server.url(), namespace=namespace, shards=8)
    # and one that does not say adopts the data's count
    adopted = RedisStore.from_url(redis_server.url(), namespace=namespace)
    try:
        assert adopted.keys.shards == 4
    finally:
        adopted.close()


@pytest.fixture
def cluster_urls() -> Iterator[list[Any]]:
    seen: list[Any] = []
    yield seen


def test_a_cluster_url_names_its_start_nodes_and_password(monkeypatch: pytest.MonkeyPatch,
                                                          cluster_urls: list[Any]) -> None:
    # given the cluster client class replaced by a recorder
    monkeypatch.setattr("celery_steps.store.redis_client.RedisCluster",
                        lambda **kwargs: cluster_urls.append(kwargs) or kwargs)
    # when a URL with a password and two nodes is opened
    cluster_client("rediss+cluster://:s3cret@10.0.0.1:7000,10.0.0.2:7001", {})
    # then both nodes start the discovery, with the password and TLS
    kwargs = cluster_urls[0]
    assert [(n.host, n.port) for n in kwargs["startup_nodes"]] == [("10.0.0.1", 7000),
                                                                   ("10.0.0.2", 7001)]
    assert kwargs["password"] == "s3cret" and kwargs["ssl"] is True


def test_a_malformed_cluster_url_is_refused_with_the_form_to_use() -> None:
    with pytest.raises(ConfigurationError, match=r"redis\+cluster://host:port"):
        cluster_client("redis+cluster://", {})
