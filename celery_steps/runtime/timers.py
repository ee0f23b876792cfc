"""The timer poller: waits for the earliest due wake-up and sends it, with no ETA.

Many workers may run one each: claims are atomic and at-least-once (a claimed timer is pushed
back by ``REDO_MS``, then removed once its message is published; a run's timer and an event's
routing timer are left pushed back, as a safety net that the run's own progress, or the
routing's completion, moves or removes: a routing task is acknowledged even when its process
dies), and every wake-up is idempotent. Unless ``steps_publish_from_client`` is set, the
pollers also publish the routing of newly sent events and the start of newly invoked runs: the
caller only writes a due-now timer with the event or run, in the same round trip.

What one claim brings is grouped: the due runs of one function go in tasks of up to
``steps_wake_batch`` runs each, the due routings likewise (a task executes its runs one after
the other, see ``Runtime.execute_many``). With a :class:`~celery_steps.runtime.ports.LocalPool`
(``steps_wake_local``), a poller claims only as much as its worker's pool has room for and
hands it over without the broker; due timers wait in the store for room (here or on another
worker, whose poller claims them) rather than in the broker's queue. What the pool does not
serve (another queue's functions) goes through the broker, and so does whatever waited for
room :data:`BUSY_FALLBACK_MS`. A routing handed over locally keeps its timer claimed (the
routing itself removes it), so a worker dying with it is covered too.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from celery_steps.runtime.lifecycle import Lifecycle
from celery_steps.runtime.ports import LocalPool, Publisher

log = logging.getLogger("celery_steps.poller")
MAX_IDLE_WAIT = 1.0
SWEEP_EVERY_S = 600.0  # how often a poller trims the indexes of expired runs
SWEEP_LIMIT = 1000
LOCAL_WAIT = 0.1
REDO_MS = 30_000
# With a local pool, due timers wait for room in it; one due this long ago is claimed even
# without room and published through the broker, as every timer was before.
BUSY_FALLBACK_MS = 5_000
ROOM_CHECK_S = 0.002  # how often a poller whose pool is full looks for room (no store call)
ROOM_WAIT_S = 0.1  # how long it does before looking at the timers again
Claimed = list[tuple[str, int]]


def dispatch(publisher: Publisher, member: str) -> None:
    """Act on one due timer member (see the vocabulary in ``store.base``). Raises when the
    broker refuses the message, so the timer stays claimed and comes due again."""
    kind, _, rest = member.partition("|")
    if kind == "r":
        function_id, _, run_id = rest.partition("|")
        publisher.enqueue_run(function_id, run_id)
    elif kind == "e":
        publisher.publish_route(rest)
    elif kind == "b":
        function_id, run_id, step_key = rest.split("|", 2)
        publisher.send_branch(function_id, run_id, step_key)
    else:
        log.error("unknown timer member %r dropped", member)


def split(items: list[str], size: int, spread: int = 1) -> list[list[str]]:
    """``items`` in consecutive chunks of at most ``size``, and at least ``spread`` chunks
    while there are enough items, their sizes differing by one at most."""
    if not items:
        return []
    count = max(-(-len(items) // max(1, size)), min(len(items), max(1, spread)))
    base, extra = divmod(len(items), count)
    chunks, start = [], 0
    for i in range(count):
        end = start + base + (1 if i < extra else 0)
        chunks.append(items[start:end])
        start = end
    return chunks


def dispatch_claimed(life: Lifecycle, claimed: Claimed, local: LocalPool | None = None,
                     spread: int = 1) -> Claimed:
    """Send what one claim brought (see the module's docstring); returns the timers to
    acknowledge: the parallel branches the broker accepted."""
    size = int(life.settings.wake_batch)
    runs: dict[str, list[str]] = {}
    routes: list[str] = []
    others: Claimed = []
    for member, score in claimed:
        kind, _, rest = member.partition("|")
        if kind == "r":
            function_id, _, run_id = rest.partition("|")
            runs.setdefault(function_id, []).append(run_id)
        elif kind == "e":
            routes.append(rest)
        else:
            others.append((member, score))
    done: Claimed = []
    room = [local.room() if local is not None else 0]
    with life.transport.batch() as publisher:
        for function_id, run_ids in runs.items():
            _send(run_ids, size, spread, room, what=f"runs of {function_id}",
                  local=_runs_to(local, function_id),
                  broker=_publish_runs(publisher, function_id))
        if routes:
            here = local if local is not None and local.takes_routes() else None
            # not acknowledged: the timer fires again if the routing never completes
            _send(routes, size, spread, room, what="routings",
                  local=None if here is None else lambda ids: here.publish_route(*ids),
                  broker=lambda ids: publisher.publish_route(*ids))
        for member, score in others:
            try:
                dispatch(publisher, member)
                done.append((member, score))
            except Exception:  # left claimed: it comes due again after REDO_MS
                log.exception("could not dispatch timer %s", member)
    return done


Send = Callable[[list[str]], None]


def _runs_to(local: LocalPool | None, function_id: str) -> Send | None:
    """How to hand runs of ``function_id`` to this worker's pool, if it serves them."""
    if local is None or not local.takes_run(function_id):
        return None
    return lambda ids: local.enqueue_run(function_id, *ids)


def _publish_runs(publisher: Publisher, function_id: str) -> Send:
    return lambda ids: publisher.enqueue_run(function_id, *ids)


def _send(ids: list[str], size: int, spread: int, room: list[int], *, what: str,
          local: Send | None, broker: Send) -> list[str]:
    """Hand the first ``room[0] * size`` ids to the local pool (``room[0]`` tasks at most; the
    room left is written back), the others to the broker; returns those the broker took."""
    rest = ids
    if local is not None and room[0] > 0:
        free = room[0]
        refused: list[str] = []
        for chunk in split(ids[:free * size], size, free):
            try:
                local(chunk)
                room[0] -= 1
            except Exception:  # the worker cannot take it now: through the broker then
                log.debug("could not hand %s to this worker's pool", what, exc_info=True)
                refused.extend(chunk)
        rest = refused + ids[free * size:]
    sent: list[str] = []
    for chunk in split(rest, size, spread):
        try:
            broker(chunk)
            sent.extend(chunk)
        except Exception:  # left claimed: due again after REDO_MS
            log.exception("could not send the wake-up of %d %s", len(chunk), what)
    return sent


def poll_once(life: Lifecycle, local: LocalPool | None = None, *, spread: int = 1) -> int:
    """Claim and dispatch every due timer once; returns how many were claimed.

    ``local``: this worker's pool. Then only as many due runs (or routings) are claimed as it
    has room for, and handed to it; what waited for room :data:`BUSY_FALLBACK_MS` is claimed
    anyway and published through the broker. ``spread``: send at least this many tasks
    through the broker when enough runs are due at once (so that pool processes share them).
    """
    store = life.store
    batch = int(life.settings.timer_batch)
    size = int(life.settings.wake_batch)
    total = 0
    while True:
        now, limit, redo = life.clock.now_ms(), batch, REDO_MS
        if local is not None:
            room = local.room()
            if room > 0:
                limit = min(batch, room * size)
            else:  # only what waited too long for room, and its timer as far ahead as usual
                now, redo = now - BUSY_FALLBACK_MS, REDO_MS + BUSY_FALLBACK_MS
        claimed = store.claim_due(now=now, limit=limit, redo_ms=redo)
        done = dispatch_claimed(life, claimed, local, spread) if claimed else []
        if done:
            store.ack_timers(done)
        total += len(claimed)
        if len(claimed) < limit:
            return total


class TimerPoller:
    """A daemon thread running :func:`poll_once` whenever the earliest timer comes due."""

    def __init__(self, life: Lifecycle, local: LocalPool | None = None,
                 spread: int = 1) -> None:
        self._life = life
        self._local = local
        self._spread = spread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        life.clock.on_change(self.poke)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="celery-steps-timers",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.poke()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def poke(self) -> None:
        try:
            self._life.store.signal()
        except Exception:
            log.debug("could not signal pollers", exc_info=True)

    def sweep_once(self) -> int:
        """Trim the run indexes of runs that expired after the retention."""
        life = self._life
        retention = int(float(life.settings.run_retention) * 1000)
        return life.store.sweep(now=life.clock.now_ms(), older_than_ms=retention,
                                limit=SWEEP_LIMIT)

    def _wait_for_room(self) -> None:
        """Until this worker's pool has room (looked at locally), or :data:`ROOM_WAIT_S`."""
        assert self._local is not None
        deadline = time.monotonic() + ROOM_WAIT_S
        while self._local.room() <= 0 and time.monotonic() < deadline:
            if self._stop.wait(ROOM_CHECK_S):
                return

    def _loop(self) -> None:
        swept_at = time.monotonic() - SWEEP_EVERY_S * random.random()  # spread the pollers
        while not self._stop.is_set():
            try:
                if time.monotonic() - swept_at >= SWEEP_EVERY_S:
                    swept_at = time.monotonic()
                    self.sweep_once()
                poll_once(self._life, self._local, spread=self._spread)
                store = self._life.store
                due = store.next_due()
                now = self._life.clock.now_ms()
                if due is not None and due <= now and self._local is not None:
                    self._wait_for_room()  # what is due waits for a free pool process here
                    continue
                wait = MAX_IDLE_WAIT if due is None else min(MAX_IDLE_WAIT, (due - now) / 1000)
                if wait > LOCAL_WAIT and not self._stop.is_set():
                    store.wait_for_signal(wait - LOCAL_WAIT)
                elif wait > 0:
                    self._stop.wait(wait)  # BLPOP timeouts are only as fine as Redis's hz
            except Exception:
                log.exception("timer poller error; retrying in 1s")
                self._stop.wait(1.0)
