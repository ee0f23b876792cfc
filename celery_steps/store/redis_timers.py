"""Timers and liveness on Redis: the shards' timer sets, the signal that wakes blocked
pollers, and the keys by which worker processes show they are alive.

A poller blocks on the ``<ns>:timers:signal`` channel, which a script publishes to when it
arms a timer earlier than its shard's earliest (a message is no key: it reaches the
subscribers of every node of a cluster). Each polling thread holds its own subscription, so
a signal sent while it was busy claiming waits for it in that subscription.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from celery_steps.store.base import FINAL, proc_host
from celery_steps.store.redis_keys import KeyLayout
from celery_steps.store.redis_values import dumps, s


class RedisTimers:
    """The timer and liveness half of :class:`~celery_steps.store.redis.RedisStore`."""

    r: redis.Redis
    keys: KeyLayout
    _scripts: dict[str, Any]

    def __init__(self) -> None:
        self._local = threading.local()
        self._subscriptions: list[Any] = []

    # -- timers -----------------------------------------------------------------------------
    def schedule(self, member: str, due: int) -> None:
        self._scripts["schedule"](keys=[self.keys.timers(self.keys.member_shard(member))],
                                  args=[member, due])

    def unschedule(self, member: str) -> None:
        self.r.zrem(self.keys.timers(self.keys.member_shard(member)), member)

    def _wake(self, members: list[str]) -> None:
        """Make members due now (never later than they were) and wake the pollers."""
        for shard, group in self.keys.by_shard(members).items():
            self._scripts["wake"](keys=[self.keys.timers(shard)], args=group)

    def _due_counts(self, now: int, limit: int) -> dict[int, int]:
        """How many timers to claim from each shard: every due one when they are at most
        ``limit``, else the earliest ``limit`` over all shards."""
        count = self.keys.shards
        if count == 1:
            return {0: limit}
        with self.r.pipeline(transaction=False) as pipe:
            for shard in range(count):
                pipe.zcount(self.keys.timers(shard), "-inf", now)
            due = {k: int(n) for k, n in enumerate(pipe.execute()) if n}
        if sum(due.values()) <= limit:
            return due
        with self.r.pipeline(transaction=False) as pipe:
            for shard in due:
                pipe.zrangebyscore(self.keys.timers(shard), "-inf", now, start=0, num=limit,
                                   withscores=True)
            firsts = sorted((score, shard) for shard, page in zip(due, pipe.execute(),
                                                                 strict=True)
                            for _, score in page)[:limit]
        return Counter(shard for _, shard in firsts)

    def claim_due(self, *, now: int, limit: int, redo_ms: int) -> list[tuple[str, int]]:
        claimed: list[tuple[str, int]] = []
        claim = uuid.uuid4().hex  # a retried call answers what this claim took
        for shard, take in self._due_counts(now, limit).items():
            members, score = self._scripts["claim_due"](
                keys=[self.keys.timers(shard), self.keys.last_claim(shard)],
                args=[now, take, redo_ms, claim])
            claimed.extend((s(m), int(float(s(score)))) for m in members)
        return claimed

    def ack_timers(self, claimed: list[tuple[str, int]]) -> None:
        by_shard: dict[int, list[Any]] = {}
        for member, score in claimed:
            by_shard.setdefault(self.keys.member_shard(member), []).extend((member, score))
        for shard, args in by_shard.items():
            self._scripts["ack_timers"](keys=[self.keys.timers(shard)], args=args)

    def next_due(self) -> int | None:
        with self.r.pipeline(transaction=False) as pipe:
            for shard in range(self.keys.shards):
                pipe.zrange(self.keys.timers(shard), 0, 0, withscores=True)
            firsts = [int(first[0][1]) for first in pipe.execute() if first]
        return min(firsts) if firsts else None

    # -- the signal -------------------------------------------------------------------------
    def _subscription(self) -> Any:
        pubsub = getattr(self._local, "pubsub", None)
        if pubsub is None:
            pubsub = self.r.pubsub()  # type: ignore[no-untyped-call]
            pubsub.subscribe(self.keys.signal)
            self._local.pubsub = pubsub
            self._subscriptions.append(pubsub)
        return pubsub

    def wait_for_signal(self, timeout: float) -> None:
        deadline = time.monotonic() + max(0.001, timeout)
        try:
            pubsub = self._subscription()
            while (left := deadline - time.monotonic()) > 0:
                message = pubsub.get_message(timeout=left)
                if message is not None and message.get("type") == "message":
                    while pubsub.get_message(timeout=0) is not None:
                        pass  # one wake-up for every signal already sent
                    return
        except (RedisConnectionError, RedisTimeoutError):
            self._drop_subscription()  # subscribed again on the next call
            time.sleep(max(0.0, min(0.5, deadline - time.monotonic())))

    def _drop_subscription(self) -> None:
        pubsub = getattr(self._local, "pubsub", None)
        self._local.pubsub = None
        if pubsub is not None:
            self._subscriptions.remove(pubsub)
            pubsub.close()

    def signal(self) -> None:
        self.r.publish(self.keys.signal, 0)

    def close_signals(self) -> None:
        for pubsub in self._subscriptions:
            pubsub.close()
        self._subscriptions.clear()

    # -- liveness ---------------------------------------------------------------------------
    def beat(self, proc: str, *, ttl_ms: int, holding: list[str] | None = None) -> None:
        key = self.keys.proc(proc)
        if holding is None:
            self.r.pexpire(key, ttl_ms)
            return
        with self.r.pipeline(transaction=False) as pipe:
            pipe.set(key, dumps(holding), px=ttl_ms)
            pipe.sadd(self.keys.host(proc_host(proc)), proc)
            pipe.execute()

    def reap(self, proc: str) -> None:
        key = self.keys.proc(proc)
        raw = self.r.get(key)
        self._wake(json.loads(raw) if raw else [])  # its runs are taken over at once
        with self.r.pipeline(transaction=False) as pipe:
            pipe.delete(key)
            pipe.srem(self.keys.host(proc_host(proc)), proc)
            pipe.execute()

    def host_procs(self, host: str) -> list[str]:
        return sorted(s(p) for p in self.r.smembers(self.keys.host(host)))

    def proc_alive(self, proc: str) -> bool:
        return bool(self.r.exists(self.keys.proc(proc)))

    def note_task(self, task_id: str, outcome: dict[str, Any], *, ttl_ms: int) -> None:
        ended = outcome.get("status") in FINAL
        key = self.keys.task_end(task_id) if ended else self.keys.task(task_id)
        self.r.set(key, dumps(outcome), px=ttl_ms)

    def task_outcome(self, task_id: str) -> dict[str, Any] | None:
        raw = self.r.get(self.keys.task_end(task_id)) or self.r.get(self.keys.task(task_id))
        if raw is None:
            return None
        if raw in (b"1", "1"):  # a start recorded before starts named their process
            return {"status": "started"}
        value: dict[str, Any] = json.loads(raw)
        return value
