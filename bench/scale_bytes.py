"""``bench.scale`` (a): sleeping runs written by the million, through the store's real path.

A real sleeping run gets to Redis through five store calls: ``put_events`` (``steps.send``),
then, when a worker routes the event, ``create_run`` (``runtime.flow.start_for``) and
``complete_routing``, then, when a worker executes it, ``acquire`` and the ``suspend`` of
``ctx.step.sleep("nap", "7d")``. :class:`SyntheticSleepers` makes those very calls, with the
arguments the runtime builds, but a :class:`Recorder` stands in for the store's Lua scripts
while they are made: it keeps each script call (keys and arguments as the store method built
them) and answers what a fresh run gets. The recorded calls are then run, in order, through
the real scripts in one pipeline per chunk, and every reply is checked. So the keys and values
are exactly those of a real run, at pipeline speed rather than one round trip per call.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery

from celery_steps import CelerySteps, Context
from celery_steps.engine.liveness import process_id
from celery_steps.functions import Function
from celery_steps.runtime.flow import start_for
from celery_steps.runtime.runs import run_id_for
from celery_steps.runtime.runtime import Runtime
from celery_steps.store.base import Suspension
from celery_steps.store.redis import RedisStore

SLEEP_MS = 7 * 24 * 3600 * 1000
# What the scripts of a fresh run answer (the store methods parse these and return normally).
FRESH_REPLIES: dict[str, Any] = {"put_event": 1, "create_run": 1, "complete_routing": 0,
                                 "acquire": [b"ok"], "suspend": [0, b"", b""]}


def register_sleeper(steps: CelerySteps) -> Function:
    """The function of ``bench.timers``' real sample: one ``ctx.step.sleep("nap", "7d")``."""

    @steps.function(id="sleeper", trigger="bench/sleep", retries=0)
    def sleeper(ctx: Context) -> dict[str, Any]:
        ctx.step.sleep("nap", "7d")
        return {"woke": True}

    return sleeper


class _Call:
    """One of the store's scripts, recorded instead of run."""

    def __init__(self, recorder: Recorder, name: str) -> None:
        self.recorder, self.name = recorder, name

    @property
    def inner(self) -> _Call:  # the store pipelines ``.inner`` in its batches
        return self

    def __call__(self, keys: list[Any], args: list[Any], client: Any = None) -> Any:
        if self.name not in FRESH_REPLIES:
            raise RuntimeError(f"a sleeping run called the unexpected script {self.name!r}")
        self.recorder.calls.append((self.name, keys, args))
        return FRESH_REPLIES[self.name]


class Recorder:
    """Stands in for a :class:`RedisStore`'s Lua scripts (the bench reaches into the store's
    private ``_scripts`` on purpose: it must not copy how the store builds keys and args)."""

    def __init__(self, store: RedisStore) -> None:
        self.real: dict[str, Any] = dict(store._scripts)
        self.calls: list[tuple[str, list[Any], list[Any]]] = []
        store._scripts = {name: _Call(self, name) for name in self.real}

    def replay(self, client: redis.Redis) -> Counter[str]:
        """Run the recorded calls in order, in one pipeline, through the real scripts; the
        replies that are not a fresh run's, by script."""
        with client.pipeline(transaction=False) as pipe:
            for name, keys, args in self.calls:
                self.real[name].inner(keys=keys, args=args, client=pipe)
            replies = pipe.execute()
        odd: Counter[str] = Counter()
        for (name, _, _), reply in zip(self.calls, replies, strict=True):
            expected = FRESH_REPLIES[name]
            if name == "acquire":
                ok = reply[0] == b"ok"
            elif name == "suspend":  # suspended: let go, no concurrency places to free
                ok = isinstance(reply, list) and reply[0] == 0 and not reply[1]
            else:
                ok = name == "complete_routing" or reply == expected
            if not ok:
                odd[f"{name} -> {reply!r}"[:80]] += 1
        self.calls.clear()
        return odd


@dataclass
class SyntheticSleepers:
    """Writes sleeping runs of ``sleeper`` through ``steps``' runtime and store (recorded,
    then replayed in chunks)."""

    steps: CelerySteps
    fn: Function
    client: redis.Redis
    written: int = 0
    odd: Counter[str] = field(default_factory=Counter)
    sample: list[tuple[str, str]] = field(default_factory=list)  # (run id, event id)

    def __post_init__(self) -> None:
        self.life: Runtime = self.steps.runtime
        self.store: RedisStore = self.life.store  # type: ignore[assignment]
        self.recorder = Recorder(self.store)
        self.proc = process_id()
        self.lease_ms = int(float(self.life.settings.lease_ttl) * 1000)

    def write(self, count: int, *, chunk: int = 2000, keep_every: int = 1000,
              deadline: float = float("inf")) -> float:
        """Write ``count`` more sleeping runs, or fewer if the wall clock passes ``deadline``
        (checked between chunks); seconds taken. Every ``keep_every``-th run id is kept with
        its event id (a sample for ``MEMORY USAGE``)."""
        t0 = time.monotonic()
        end = self.written + count
        while self.written < end and time.time() < deadline:
            upto = min(end, self.written + chunk)
            for i in range(self.written, upto):
                ids = self._one(i)
                if i % keep_every == 0:
                    self.sample.append(ids)
            self.odd.update(self.recorder.replay(self.client))
            self.written = upto
        return time.monotonic() - t0

    def warm(self, count: int) -> None:
        """Runs ``-1`` .. ``-count``, not counted: the shared keys exist before a census."""
        for i in range(1, count + 1):
            self._one(-i)
        self.odd.update(self.recorder.replay(self.client))

    def _one(self, i: int) -> tuple[str, str]:
        """What a real sleeper's life does to the store, in the order it does it."""
        [event_id] = self.steps.send({"name": "bench/sleep", "data": {"i": i}})
        event = _stored_event(self.recorder.calls[-1])
        run_id = run_id_for(self.fn.id, event_id)
        start_for(self.life, self.fn, event, run_id)
        self.store.complete_routing(event_id, [run_id], ttl_ms=self.life.event_ttl_ms)
        holder = f"{uuid.uuid4().hex[:16]}@{self.proc}"  # as Heartbeat.new_holder makes it
        now = self.life.clock.now_ms()
        self.store.acquire(run_id, holder, function_id=self.fn.id, now=now,
                           lease_ms=self.lease_ms)
        wake_at = now + SLEEP_MS
        state = {"op": "sleep", "pos": 0, "status": "sleeping", "started_at": now,
                 "wake_at": wake_at, "attempts": 1}  # as StepTools._sleep makes it
        self.store.suspend(run_id, holder, Suspension("sleeping", wake_at, "nap", state))
        return run_id, event_id


def _write_share(url: str, namespace: str, first: int, count: int, deadline: float) -> tuple[
        list[tuple[str, str]], Counter[str], int]:
    """One writer process's share: runs ``first`` .. ``first + count - 1`` (fewer past the
    deadline); the sample, the odd replies, how many it wrote."""
    app, steps, fn = synthetic_app(url, namespace)
    writer = SyntheticSleepers(steps, fn, redis.Redis.from_url(url), written=first)
    writer.write(count, deadline=deadline)
    writer.client.close()
    app.close()
    return writer.sample, writer.odd, writer.written - first


@dataclass
class Written:
    """What :func:`write_parallel` wrote."""

    count: int
    seconds: float
    sample: list[tuple[str, str]]
    odd: Counter[str]


def write_parallel(url: str, namespace: str, first: int, count: int, procs: int,
                   deadline: float = float("inf")) -> Written:
    """Runs ``first`` .. ``first + count - 1`` written by ``procs`` forked writer processes
    (one is CPU-bound in redis-py's command packing), each stopping early if the wall clock
    passes ``deadline``."""
    share = -(-count // procs)
    jobs = [(url, namespace, start, min(share, first + count - start), deadline)
            for start in range(first, first + count, share)]
    t0 = time.monotonic()
    with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
        results = pool.starmap(_write_share, jobs)
    took = time.monotonic() - t0
    return Written(sum(n for _, _, n in results), took,
                   [ids for part, _, _ in results for ids in part],
                   sum((o for _, o, _ in results), Counter()))


def _stored_event(put_event: tuple[str, list[Any], list[Any]]) -> dict[str, Any]:
    """The event as routing reads it back: the JSON ``put_event`` stored."""
    name, _, args = put_event
    assert name == "put_event", name
    event: dict[str, Any] = json.loads(args[0])
    return event


def synthetic_app(url: str, namespace: str) -> tuple[Celery, CelerySteps, Function]:
    """A Celery app on ``url`` with ``sleeper`` registered: no worker, nothing published."""
    app = Celery("bench_scale", broker=url, backend=None, set_as_current=False)
    app.conf.update(steps_store_url=url, steps_namespace=namespace, task_serializer="json",
                    accept_content=["json"])
    steps = CelerySteps(app)
    return app, steps, register_sleeper(steps)


def compare_with_real(url: str, runs: int) -> tuple[dict[str, Any], dict[str, Any],
                                                   SyntheticSleepers]:
    """``runs`` sleepers of a real worker (``bench.timers.sleeper_bytes``: 20 warm-up runs,
    then the census), then, on the emptied server and in the same namespace (same key
    lengths), the same synthetically. Both sides' census deltas and sample run fields, and the
    writer, to go on with."""
    from bench.timers import memory_census, sleeper_bytes

    real = sleeper_bytes(url, runs)
    client = redis.Redis.from_url(url)
    client.flushall()
    _, steps, fn = synthetic_app(url, "bench_sleep")
    writer = SyntheticSleepers(steps, fn, client)
    writer.warm(20)
    census0 = memory_census(client, "bench_sleep")
    writer.write(runs, keep_every=1)
    census1 = memory_census(client, "bench_sleep")
    run_id, _ = writer.sample[runs // 2]
    meta = store_key = writer.store.run_key(run_id)
    synthetic = {
        "census0": {k: (len(v), sum(v)) for k, v in census0.items()},
        "census1": {k: (len(v), sum(v)) for k, v in census1.items()},
        "sample_meta": _field_sizes(client, meta),
        "sample_steps": _field_sizes(client, store_key + ":steps"),
        "sample_meta_usage": client.memory_usage(meta, samples=0),
        "sample_steps_usage": client.memory_usage(store_key + ":steps", samples=0),
        "odd": dict(writer.odd),
    }
    return real, synthetic, writer


def _field_sizes(client: redis.Redis, key: str) -> dict[str, int]:
    """A hash's fields and the byte length of each value."""
    return {k.decode() if isinstance(k, bytes) else k: len(v)
            for k, v in client.hgetall(key).items()}


# -- measuring --------------------------------------------------------------------------------
def per_run_keys(store: RedisStore, run_id: str, event_id: str) -> dict[str, str]:
    """The keys that belong to one run (its event's included), by kind."""
    rk = store.keys.run_keys(run_id)
    event = store.keys.event(event_id)
    return {"run meta hash": rk.meta, "run steps hash": rk.steps, "run events": rk.events,
            "event (evt:<id>)": event, "event runs (evt:<id>:runs)": event + ":runs"}


def shared_keys(store: RedisStore, function_id: str) -> list[str]:
    """The keys every run has a share in: timers, indexes (one shard on one server)."""
    keys = store.keys
    out = [keys.functions, keys.config]
    for shard in range(keys.shards):
        out += [keys.timers(shard), keys.fns(shard), keys.fn_index(shard, function_id)]
        out += list(keys.run_keys(f"x{shard}").statuses)
    return out


def memory_usage(client: redis.Redis, keys: list[str]) -> list[int]:
    """``MEMORY USAGE`` (SAMPLES 0: exact) of each key, 0 for a missing one."""
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.memory_usage(key, samples=0)
        return [int(size or 0) for size in pipe.execute()]


@dataclass
class BytesResult:
    """What scenario (a) measured."""

    real: dict[str, Any]
    synthetic: dict[str, Any]
    checkpoints: list[Checkpoint]
    pending: dict[str, float]
    stopped_by: str  # "" when --runs were all written


@dataclass
class Checkpoint:
    """Bytes per sleeping run once ``n`` are written."""

    n: int
    write_s: float
    used: float  # used_memory delta / n
    dataset: float  # used_memory_dataset delta / n
    run_keys: float  # MEMORY USAGE per run: its own run keys (sampled) + its share of indexes
    event_keys: float  # MEMORY USAGE per run: its event's keys (expire after the dedupe window)
    odd: int  # script replies that were not a fresh run's
    load: float


def checkpoint(client: redis.Redis, store: RedisStore, function_id: str, *, n: int,
               sample: list[tuple[str, str]], mem0: dict[str, Any], write_s: float,
               odd: int) -> Checkpoint:
    """Measure now, ``n`` runs written since ``mem0``: ``INFO memory`` against ``mem0``, and
    ``MEMORY USAGE`` of the sampled runs' keys plus the shared keys' total over ``n``."""
    mem = client.info("memory")
    by_kind: Counter[str] = Counter()
    for run_id, event_id in sample:
        kinds = per_run_keys(store, run_id, event_id)
        for kind, size in zip(kinds, memory_usage(client, list(kinds.values())), strict=True):
            by_kind[kind] += size
    kept = len(sample) or float("nan")  # (a write cut short may have kept none)
    events = sum(v for k, v in by_kind.items() if k.startswith("event")) / kept
    runs = sum(v for k, v in by_kind.items() if k.startswith("run")) / kept
    shared = sum(memory_usage(client, shared_keys(store, function_id))) / n
    return Checkpoint(n, write_s, (mem["used_memory"] - mem0["used_memory"]) / n,
                      (mem["used_memory_dataset"] - mem0["used_memory_dataset"]) / n,
                      runs + shared, events, odd, _load())


def _load() -> float:
    return os.getloadavg()[0]


def celery_messages(url: str, count: int) -> dict[str, float]:
    """The baseline: ``count`` messages of a trivial task with a small JSON argument, waiting
    in the Redis broker's queue (no worker). ``used_memory`` delta per message, and the
    queue's ``MEMORY USAGE`` per message."""
    app = Celery("bench_pending", broker=url, backend=None, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"],
                    task_default_queue="bench_pending")

    @app.task(name="bench.pending", ignore_result=True, shared=False)  # type: ignore[untyped-decorator]
    def pending(data: dict[str, Any]) -> dict[str, Any]:
        return data

    client = redis.Redis.from_url(url)
    pending.delay({"i": -1})  # the queue and kombu's binding keys exist before the baseline
    client.delete("bench_pending")
    mem0 = client.info("memory")
    t0 = time.monotonic()
    with app.producer_or_acquire() as producer:
        for i in range(count):
            pending.apply_async(({"i": i},), producer=producer)
    send_s = time.monotonic() - t0
    mem1 = client.info("memory")
    queued = int(client.llen("bench_pending"))
    usage = int(client.memory_usage("bench_pending", samples=0) or 0)
    client.delete("bench_pending")
    client.close()
    app.close()
    return {"count": queued, "used": (mem1["used_memory"] - mem0["used_memory"]) / queued,
            "usage": usage / queued, "send_rate": count / send_s}
