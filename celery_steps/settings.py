"""Settings, read from ``app.conf`` with the ``steps_`` prefix (``CELERY_STEPS_*`` in Django)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from celery_steps.errors import ConfigurationError
from celery_steps.jsonshape import DEFAULT_MAX_DEPTH

REDIS_SCHEMES = ("redis://", "rediss://", "redis+socket://", "unix://", "sentinel://",
                 "redis+cluster://", "rediss+cluster://")
MAX_SHARDS = 1024
# Deeper values reach recursion limits on the way (Python's json and copy, Lua's cjson).
MAX_JSON_DEPTH_SETTING = 200


@dataclass(frozen=True)
class Settings:
    """Every setting with its default. ``steps_<name>`` in ``app.conf`` overrides each."""

    store_url: str | None = None
    # redis-py / Sentinel options of the store, as Celery's broker_transport_options take
    # them: {"master_name": "mymaster", "sentinel_kwargs": {...}, ...}
    store_transport_options: dict[str, Any] | None = None
    namespace: str = "celery_steps"
    # how many ways runs, events, timers and indexes are split (one Redis Cluster slot each):
    # None = 16 on a cluster, 1 on one server; fixed once a namespace has data
    store_shards: int | None = None
    event_max_bytes: int = 512 * 1024
    retry_backoff_base: float = 1.0
    retry_backoff_max: float = 600.0
    run_retention: float = 7 * 24 * 3600.0
    event_dedupe_window: float = 24 * 3600.0
    lease_ttl: float = 10.0
    start_watchdog: float = 300.0
    # A run_task task not seen running this long after it was sent (the broker lost it, or
    # the process running it died) is sent again; then twice as long, and so on
    run_task_resend_after: float = 300.0
    route_sweep_after: float = 120.0
    timer_poller: bool = True
    timer_batch: int = 500
    # At most this many due runs of one function (or event routings) per Celery task the
    # timer pollers send; 1 (the default): one task per run, as Celery signals, Flower and
    # result hooks expect
    wake_batch: int = 1
    # A worker whose poller claims due wake-ups executes those it has room for itself, handing
    # them to its own pool without a broker round trip (prefork and threads pools)
    wake_local: bool = True
    # False: a sent event's routing and an invoked run's start are published by the workers'
    # timer pollers (the caller only writes to the store: one round trip); True: by the caller
    publish_from_client: bool = False
    wait_max_timeout: float = 366 * 24 * 3600.0
    step_max_bytes: int = 4 * 1024 * 1024
    run_max_steps: int = 1000
    run_max_state_bytes: int = 32 * 1024 * 1024
    json_max_depth: int = DEFAULT_MAX_DEPTH

    @classmethod
    def from_conf(cls, conf: Any, **overrides: Any) -> Settings:
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = overrides.get(f.name)
            if value is None:
                value = conf.get(f"steps_{f.name}")
            if value is not None:
                values[f.name] = value
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        numeric = ("event_max_bytes", "retry_backoff_base", "retry_backoff_max", "run_retention",
                   "lease_ttl", "start_watchdog", "run_task_resend_after", "route_sweep_after",
                   "timer_batch",
                   "wake_batch",
                   "step_max_bytes", "run_max_steps", "run_max_state_bytes")
        for name in numeric:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigurationError(
                    f"setting steps_{name} must be a positive number, got {value!r}"
                )
        if self.wake_batch != int(self.wake_batch):
            raise ConfigurationError(
                f"setting steps_wake_batch must be a whole number of runs, got "
                f"{self.wake_batch!r}")
        if not isinstance(self.wake_local, bool):
            raise ConfigurationError(
                f"setting steps_wake_local must be True or False, got {self.wake_local!r}")
        depth = self.json_max_depth
        if isinstance(depth, bool) or not isinstance(depth, int) or not (
            1 <= depth <= MAX_JSON_DEPTH_SETTING
        ):
            raise ConfigurationError(
                f"setting steps_json_max_depth must be a whole number from 1 to "
                f"{MAX_JSON_DEPTH_SETTING}, got {depth!r}"
            )
        shards = self.store_shards
        if shards is not None and (isinstance(shards, bool) or not isinstance(shards, int)
                                   or not 1 <= shards <= MAX_SHARDS):
            raise ConfigurationError(
                f"setting steps_store_shards must be a whole number from 1 to {MAX_SHARDS}, "
                f"got {shards!r}")
        if not isinstance(self.namespace, str) or not self.namespace or "{" in self.namespace:
            raise ConfigurationError(
                f"setting steps_namespace must be a non-empty string without braces, "
                f"got {self.namespace!r}"
            )


def store_transport_options(url: str, conf: Any) -> dict[str, Any]:
    """The store's transport options: ``steps_store_transport_options``, else those Celery
    has for the result backend or broker the store URL was taken from."""
    configured = conf.get("steps_store_transport_options")
    if configured:
        return dict(configured)
    for setting, options in (("result_backend", "result_backend_transport_options"),
                             ("broker_url", "broker_transport_options")):
        if conf.get(setting) == url:
            return dict(conf.get(options) or {})
    return {}


def resolve_store_url(explicit: str | None, conf: Any) -> str:
    """The store URL, in the contract's order: argument, setting, result backend, broker."""
    if explicit:
        return explicit
    configured = conf.get("steps_store_url")
    if configured:
        return str(configured)
    for setting in ("result_backend", "broker_url"):
        value = conf.get(setting)
        if isinstance(value, str) and value.startswith(REDIS_SCHEMES):
            return value
    raise ConfigurationError(
        "celery-steps has no state store: set steps_store_url (CELERY_STEPS_STORE_URL in "
        "Django) to a redis:// URL, or 'memory://' for one-process tests and demos; "
        "a redis:// result backend or broker is used automatically when configured"
    )
