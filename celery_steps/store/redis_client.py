"""Redis clients for a store URL: one server, a Unix socket, Sentinel, or a Redis Cluster."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel

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
