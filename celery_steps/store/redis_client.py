"""Redis clients for a store URL: one server, a Unix socket, Sentinel, or a Redis Cluster."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from celery_steps.errors import ConfigurationError

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
# Spread over a cluster's masters; one server gains nothing from more than one shard.
CLUSTER_SHARDS = 16


def connect(url: str, options: Mapping[str, Any] | None = None) -> redis.Redis:
    """A client for ``url``. Every client retries a dropped connection (a restart, a
    failover) for about 15 s; each store script is safe to run twice, so a retry after a
    lost reply changes nothing."""
    resilient: dict[str, Any] = {
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=20),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "health_check_interval": 30,
    }
    if url.startswith("sentinel://"):
        return sentinel_client(url, dict(options or {}), resilient)
    if url.startswith(CLUSTER_SCHEMES):
        return cluster_client(url, dict(options or {}))
    if url.startswith("redis+socket://"):
        url = "unix://" + url[len("redis+socket://"):]
    return redis.Redis.from_url(url, **resilient)


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def cluster_client(url: str, options: dict[str, Any]) -> redis.Redis:
    """A Redis Cluster client from ``redis+cluster://[:password@]host:port[,host:port...]``
    (``rediss+cluster://`` for TLS); the nodes listed are where it starts discovering."""
    tls = url.startswith("rediss+")
    rest = url.split("://", 1)[1]
    auth, _, hosts = rest.rpartition("@")
    nodes: list[ClusterNode] = []
    for part in hosts.split("/", 1)[0].split(","):
        parsed = urlparse(f"redis://{part.strip()}")
        if not parsed.hostname:
            raise ConfigurationError(
                f"invalid cluster URL {url!r}: use redis+cluster://host:port[,host:port...]")
        nodes.append(ClusterNode(parsed.hostname, parsed.port or 6379))  # type: ignore[no-untyped-call]
    if auth:
        user, _, password = auth.rpartition(":")
        options.setdefault("password", password)
        if user:
            options.setdefault("username", user)
    options.setdefault("ssl", tls)
    client: Any = RedisCluster(
        startup_nodes=nodes, retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=20),
        **options)
    return client  # type: ignore[no-any-return]  # duck-types redis.Redis for the store


def sentinel_client(url: str, options: dict[str, Any],
                    resilient: dict[str, Any]) -> redis.Redis:
    """A client of the master that Sentinel names, following it through failovers.

    ``url`` is Celery's form, ``sentinel://[:password@]host:port[/db]``, several joined by
    ``;``; ``options`` are Celery's transport options: ``master_name`` (required),
    ``sentinel_kwargs`` (for the sentinels themselves), and connection options such as
    ``password`` or ``ssl``."""
    master = options.pop("master_name", None)
    if not master:
        raise ConfigurationError(
            "a sentinel:// store URL needs the name of the master: set "
            "steps_store_transport_options = {'master_name': 'mymaster'} (Celery's "
            "broker_transport_options are used when the store is the broker)")
    hosts: list[tuple[str, int]] = []
    db, password = 0, None
    for part in url.split(";"):
        parsed = urlparse(part.strip())
        if parsed.scheme != "sentinel" or not parsed.hostname:
            raise ConfigurationError(
                f"invalid sentinel URL {part.strip()!r}: use sentinel://host:26379, several "
                "joined by ';'")
        hosts.append((parsed.hostname, parsed.port or 26379))
        password = parsed.password or password
        if parsed.path.strip("/").isdigit():
            db = int(parsed.path.strip("/"))
    sentinel_kwargs = options.pop("sentinel_kwargs", None) or {}
    options.setdefault("password", password)
    sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, **{  # type: ignore[no-untyped-call]
        k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")})
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        master, db=db, **resilient, **options)
    return client


def block_limit(client: Any) -> float:
    """The longest one blocking command may wait: well under the client's socket timeout
    (redis-py 8 sets 5 s by default), or it would read as a dead connection and be retried."""
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None) or {}
    timeout = kwargs.get("socket_timeout") or kwargs.get("orig_socket_timeout")
    return 2.0 if not timeout else max(0.05, min(2.0, float(timeout) / 2))


class ThreadConnections:
    """One held connection per thread, for the store's scripts.

    A step's checkpoint is one script call; through the pool, each call also checks a
    connection out (with a liveness probe) and back in, which costs about as much as a tenth
    of the round trip itself. A thread that executes runs keeps one connection instead: the
    pool's connections, so the same server, retries and timeouts.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._local = threading.local()
        # weak: a thread that ends drops its client, which gives its connection back
        self._clients: weakref.WeakSet[redis.Redis] = weakref.WeakSet()

    @classmethod
    def over(cls, client: redis.Redis) -> ThreadConnections | None:
        """Held connections for ``client``'s pool; None for a cluster (it routes each call to
        a node) and for Sentinel (a call that fails over must find the new master, which a
        connection from the pool does)."""
        if is_cluster(client) or isinstance(client.connection_pool, SentinelConnectionPool):
            return None
        return cls(client)

    def client(self) -> redis.Redis:
        """This thread's client (created on its first call, and again in a forked child:
        a connection inherited from the parent is the parent's socket)."""
        held: tuple[int, redis.Redis] | None = getattr(self._local, "held", None)
        if held is not None and held[0] == os.getpid():
            return held[1]
        client = redis.Redis(connection_pool=self._pool, single_connection_client=True)
        if held is not None:  # the parent's: its socket is not ours to use or close
            held[1].connection = None
            self._clients = weakref.WeakSet()
        self._local.held = (os.getpid(), client)
        self._clients.add(client)
        return client

    def close(self) -> None:
        """Give every held connection back to the pool."""
        for client in list(self._clients):
            client.close()
