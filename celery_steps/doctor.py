"""``celery -A proj steps doctor``: check a deployment's store, workers, beat and clocks.

Each check gives one :class:`Check`: ``PASS``, ``WARN`` (works, but look at it, or cannot be
determined) or ``FAIL`` (runs will be lost or stuck), with the fix in its detail. The checks:

* the store: reachable, its Redis version, ``maxmemory-policy`` (must not evict), persistence
  (AOF or RDB save points);
* queues: every queue the functions and the internal tasks are routed to has a worker
  consuming it (remote control ``active_queues``);
* beat, when cron triggers exist: beat answers ``ping`` (with ``beat_enable_remote_control``),
  or else the latest cron tick of the last 24 hours started its run (its event id is known);
* clocks: Redis ``TIME`` against this host, and each worker's clock (the ``steps_clock``
  remote-control command) against Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import redis
from celery import Celery
from kombu.utils.url import maybe_sanitize_url

from celery_steps.errors import CeleryStepsError
from celery_steps.extension import CelerySteps
from celery_steps.integration.control import CLOCK_COMMAND
from celery_steps.integration.transport import (
    BRANCH_TASK,
    CRON_TASK,
    ROUTE_TASK,
    TASK_DONE,
    TASK_FAILED,
)
from celery_steps.settings import resolve_store_url, store_transport_options
from celery_steps.store.redis import RedisStore
from celery_steps.store.redis_client import CLUSTER_SCHEMES, connect
from celery_steps.store.redis_guard import read_config

Status = Literal["PASS", "WARN", "FAIL"]
MIN_REDIS = (6, 2)
SKEW_WARN = 1.0
SKEW_FAIL = 10.0
"""Seconds. A worker whose clock is this far from Redis's breaks cron ticks and timers."""
TICK_GRACE = timedelta(minutes=1)
"""A cron tick this old has had time to start its run."""


@dataclass(frozen=True)
class Check:
    """The outcome of one check; ``detail`` says what was found and how to fix it."""

    check: str
    status: Status
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def run_checks(ext: CelerySteps, *, timeout: float = 2.0, app_arg: str | None = None
               ) -> list[Check]:
    """Every check, in order: store, queues and workers, beat, clocks. ``app_arg`` is the
    ``-A`` value the fixes quote (default: the app's main name)."""
    checks: list[Check] = []
    celery = f"celery -A {app_arg or ext.app.main}"
    client = _store_checks(ext, checks, timeout)
    workers = _queue_checks(ext, checks, timeout, celery)
    _beat_check(ext, checks, client, timeout, celery)
    if client is not None:
        _clock_checks(ext.app, checks, client, workers, timeout)
    return checks


def failed(checks: list[Check]) -> bool:
    return any(c.status == "FAIL" for c in checks)


# -- the store -------------------------------------------------------------------------------
def _store_checks(ext: CelerySteps, checks: list[Check], timeout: float) -> redis.Redis | None:
    try:
        url = resolve_store_url(getattr(ext.runtime, "_store_url", None), ext.app.conf)
    except CeleryStepsError as exc:
        checks.append(Check("store", "FAIL", str(exc)))
        return None
    if url.startswith("memory://"):
        checks.append(Check("store", "WARN", "memory:// keeps state inside one process: fine "
                            "for tests, not for workers; set steps_store_url to a redis:// URL"))
        return None
    shown = maybe_sanitize_url(url)
    if url.startswith(("sentinel://", *CLUSTER_SCHEMES)):
        client = connect(url, {**store_transport_options(url, ext.app.conf),
                               "socket_timeout": timeout, "socket_connect_timeout": timeout})
    else:
        if url.startswith("redis+socket://"):
            url = "unix://" + url[len("redis+socket://"):]
        client = redis.Redis.from_url(url, socket_timeout=timeout,
                                      socket_connect_timeout=timeout)
    try:
        client.ping()
        info = client.info("server")
    except redis.RedisError as exc:
        checks.append(Check("store", "FAIL", f"cannot reach Redis at {shown} ({exc}): start "
                            "it, or fix steps_store_url"))
        return None
    checks.append(Check("store", "PASS", f"Redis at {shown} answers"))
    checks.append(_version_check(str(info.get("redis_version", "?"))))
    checks.append(_eviction_check(client))
    checks.append(_persistence_check(client))
    return client


def _version_check(version: str) -> Check:
    try:
        parts = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return Check("redis version", "WARN", f"unrecognised Redis version {version!r}")
    if parts < MIN_REDIS:
        wanted = ".".join(map(str, MIN_REDIS))
        return Check("redis version", "WARN", f"Redis {version} is older than {wanted}, the "
                     f"oldest celery-steps is tested on: upgrade to {wanted} or newer")
    return Check("redis version", "PASS", f"Redis {version}")


def _config(client: redis.Redis, name: str) -> str | None:
    """A CONFIG GET value, or None when CONFIG is disabled (managed Redis)."""
    try:
        values = read_config(client, name)  # every master of a cluster: the odd one out
    except redis.ResponseError:
        return None
    return next((v for v in values if v != values[0]), values[0]) if values else None


def _eviction_check(client: redis.Redis) -> Check:
    policy = _config(client, "maxmemory-policy")
    if policy is None:
        return Check("maxmemory-policy", "WARN", "CONFIG GET is disabled on this Redis: make "
                     "sure maxmemory-policy is noeviction in its settings")
    if policy != "noeviction":
        return Check("maxmemory-policy", "FAIL", f"{policy!r} lets Redis evict keys, so run "
                     "state can vanish: set maxmemory-policy noeviction (redis.conf, or "
                     "CONFIG SET maxmemory-policy noeviction)")
    return Check("maxmemory-policy", "PASS", "noeviction: Redis never drops run state")


def _persistence_check(client: redis.Redis) -> Check:
    aof, save = _config(client, "appendonly"), _config(client, "save")
    if aof is None and save is None:
        return Check("persistence", "WARN", "CONFIG GET is disabled on this Redis: make sure "
                     "AOF (appendonly yes) or RDB save points are on")
    found = []
    if aof == "yes":
        found.append(f"AOF (appendfsync {_config(client, 'appendfsync') or '?'})")
    if save:
        found.append(f"RDB save points {save!r}")
    if not found:
        return Check("persistence", "WARN", "off (appendonly no, no save points): a Redis "
                     "restart loses every run, sleep and wait; turn on AOF (appendonly yes) "
                     "or RDB save points (save 3600 1 300 100 60 10000)")
    return Check("persistence", "PASS", " and ".join(found))


# -- queues and workers ----------------------------------------------------------------------
def queues_in_use(app: Celery, ext: CelerySteps) -> dict[str, list[str]]:
    """Each queue the extension's messages are routed to, and the tasks sent there."""
    router = app.amqp.router
    functions = list(ext.functions.values())
    sends: list[tuple[str, tuple[Any, ...]]] = [(ROUTE_TASK, ()), (TASK_DONE, ()),
                                                (TASK_FAILED, ())]
    if any(fn.crons for fn in functions):
        sends.append((CRON_TASK, ()))
    for fn in functions:
        sends += [(fn.task_name, ()), (BRANCH_TASK, (fn.id, "", ""))]
    queues: dict[str, list[str]] = {}
    for name, args in sends:
        queue = router.route({}, name, args, {}).get("queue")
        queue_name = getattr(queue, "name", queue) or app.conf.task_default_queue
        label = f"{name} ({args[0]})" if args else name
        tasks = queues.setdefault(str(queue_name), [])
        if label not in tasks:
            tasks.append(label)
    return queues


def _queue_checks(ext: CelerySteps, checks: list[Check], timeout: float,
                  celery: str) -> list[str]:
    app = ext.app
    if app.conf.task_always_eager:
        checks.append(Check("workers", "WARN", "task_always_eager is on: tasks run where they "
                            "are sent, no worker consumes queues (fine for tests only)"))
        return []
    queues = queues_in_use(app, ext)
    try:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception as exc:  # the broker is down or unreachable
        checks.append(Check("workers", "FAIL", f"cannot ask the workers through the broker "
                            f"({type(exc).__name__}: {exc}): check broker_url"))
        return []
    if not replies:
        checks.append(Check("workers", "FAIL", f"no worker replied within {timeout:g}s: start "
                            f"one with `{celery} worker -Q {','.join(queues)}`"))
    else:
        checks.append(Check("workers", "PASS", f"{len(replies)} replied: "
                            + ", ".join(sorted(replies))))
    consumers: dict[str, list[str]] = {}
    for node, node_queues in replies.items():
        for queue in node_queues or []:
            consumers.setdefault(str(queue.get("name")), []).append(node)
    for queue, tasks in sorted(queues.items()):
        what = ", ".join(tasks)
        if queue in consumers:
            checks.append(Check(f"queue {queue}", "PASS", f"consumed by "
                                f"{', '.join(sorted(consumers[queue]))} (for {what})"))
        elif replies:
            checks.append(Check(f"queue {queue}", "FAIL", f"no worker consumes it, so {what} "
                                f"never run: start one with `{celery} worker -Q {queue}` or "
                                "add it to a worker's -Q"))
    return sorted(replies)


# -- beat ------------------------------------------------------------------------------------
def _beat_check(ext: CelerySteps, checks: list[Check], client: redis.Redis | None,
                timeout: float, celery: str) -> None:
    crons = [(fn, cron) for fn in ext.functions.values() for cron in fn.crons]
    if not crons:
        checks.append(Check("beat", "PASS", "no cron triggers: no beat needed"))
        return
    if not ext.app.conf.task_always_eager:
        try:
            pongs = ext.app.control.ping(timeout=timeout) or []
        except Exception:
            pongs = []
        beats = sorted(node for reply in pongs for node in reply if node.startswith("celerybeat@"))
        if beats:
            checks.append(Check("beat", "PASS", f"{', '.join(beats)} answers ping"))
            return
    hint = ("set beat_enable_remote_control = True so doctor can ping beat, and make sure "
            f"one `{celery} beat` runs")
    if client is None:
        checks.append(Check("beat", "WARN", f"cannot tell whether beat runs: {hint}"))
        return
    store = RedisStore(client, namespace=ext.settings.namespace, check_policy=False)
    now = datetime.now(timezone.utc)
    window = timedelta(seconds=float(ext.settings.event_dedupe_window))
    latest: tuple[datetime, str] | None = None
    for fn, cron in crons:
        fire = cron.latest_at_or_before(now - TICK_GRACE)
        if fire is None or now - fire > window:
            continue
        event_id = f"cron:{fn.id}:{cron.tick_id(fire)}"
        if store.get_event(event_id) is not None:
            checks.append(Check("beat", "PASS", f"the tick of {fn.id} at {cron.tick_id(fire)} "
                                f"({cron.tz_name}) started its run"))
            return
        if latest is None or fire > latest[0]:
            latest = (fire, f"{fn.id} at {cron.tick_id(fire)} ({cron.tz_name})")
    if latest is None:
        checks.append(Check("beat", "WARN", f"no cron trigger fired in the last {window}, so "
                            f"doctor cannot tell whether beat runs: {hint}"))
    else:
        checks.append(Check("beat", "WARN", f"the latest cron tick ({latest[1]}) started no "
                            f"run: no beat was running then (or its queue had no worker); "
                            f"{hint}"))


# -- clocks ----------------------------------------------------------------------------------
def _skew_check(name: str, offset: float, uncertainty: float, against: str) -> Check:
    side = "ahead of" if offset > 0 else "behind"
    text = f"{abs(offset):.3f}s {side} {against} (±{uncertainty:.3f}s)"
    worst = abs(offset) - uncertainty
    if worst > SKEW_FAIL:
        return Check(name, "FAIL", f"{text}: more than {SKEW_FAIL:g}s breaks cron ticks and "
                     "timers; sync the clocks with NTP (chrony, systemd-timesyncd)")
    if worst > SKEW_WARN:
        return Check(name, "WARN", f"{text}: sync the clocks with NTP")
    return Check(name, "PASS", text)


def _measure(call: Callable[[], Any]) -> tuple[Any, float, float]:
    """Call ``call``; its result, the midpoint of the call in Unix seconds, half its length."""
    start = time.time()
    result = call()
    end = time.time()
    return result, (start + end) / 2, (end - start) / 2


def _clock_checks(app: Celery, checks: list[Check], client: redis.Redis, workers: list[str],
                  timeout: float) -> None:
    try:
        (seconds, micros), local, spread = _measure(client.time)
    except redis.RedisError as exc:
        checks.append(Check("clock redis", "WARN", f"Redis TIME failed: {exc}"))
        return
    redis_offset = seconds + micros / 1e6 - local  # Redis minus this host
    checks.append(_skew_check("clock redis", redis_offset, spread, "this host"))
    if not workers:
        return
    try:
        replies, local, spread = _measure(lambda: app.control.broadcast(
            CLOCK_COMMAND, reply=True, timeout=timeout, limit=len(workers)))
    except Exception as exc:
        checks.append(Check("clock workers", "WARN", f"could not ask the workers: {exc}"))
        return
    times = {node: body.get("time") for reply in replies or [] for node, body in reply.items()
             if isinstance(body, dict)}
    for node in workers:
        value = times.get(node)
        if not isinstance(value, (int, float)):
            checks.append(Check(f"clock {node}", "WARN", "no reply to steps_clock (a worker "
                                "without celery-steps, or an older one): its clock is unknown"))
            continue
        checks.append(_skew_check(f"clock {node}", value - local - redis_offset, spread,
                                  "Redis"))
