"""The timer poller: waits for the earliest due wake-up and publishes it, with no ETA.

Many workers may run one each: claims are atomic and at-least-once (a claimed timer is
pushed back by ``REDO_MS``, then removed once its message is published; a run's timer and an
event's routing timer are left pushed back, as a safety net that the run's own progress, or
the routing's completion, moves or removes), and every wake-up is idempotent. Unless
``steps_publish_from_client`` is set, the pollers also publish the routing of newly sent
events and the start of newly invoked runs: the caller only writes a due-now timer with the
event or run, in the same round trip.
"""

from __future__ import annotations

import logging
import random
import threading
import time

from celery_steps.runtime.lifecycle import Lifecycle
from celery_steps.runtime.ports import Publisher

log = logging.getLogger("celery_steps.poller")
MAX_IDLE_WAIT = 1.0
SWEEP_EVERY_S = 600.0  # how often a poller trims the indexes of expired runs
SWEEP_LIMIT = 1000
LOCAL_WAIT = 0.1
REDO_MS = 30_000


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


def poll_once(life: Lifecycle) -> int:
    """Claim and dispatch every due timer once; returns how many were dispatched."""
    store = life.store
    batch = int(life.settings.timer_batch)
    total = 0
    while True:
        claimed = store.claim_due(now=life.clock.now_ms(), limit=batch, redo_ms=REDO_MS)
        done = []
        with life.transport.batch() as publisher:
            for member, score in claimed:
                try:
                    dispatch(publisher, member)
                    if not member.startswith(("r|", "e|")):
                        # a run's timer and an event's stay armed (pushed back by the
                        # claim): if this message is lost, or the task executing it dies
                        # (a routing task is acked then), it fires again; the run's own
                        # progress (acquire, suspend, end) or complete_routing moves or
                        # removes it long before
                        done.append((member, score))
                except Exception:  # left claimed: it comes due again after REDO_MS
                    log.exception("could not dispatch timer %s", member)
        if done:
            store.ack_timers(done)
        total += len(done)
        if len(claimed) < batch:
            return total


class TimerPoller:
    """A daemon thread running :func:`poll_once` whenever the earliest timer comes due."""

    def __init__(self, life: Lifecycle) -> None:
        self._life = life
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

    def _loop(self) -> None:
        swept_at = time.monotonic() - SWEEP_EVERY_S * random.random()  # spread the pollers
        while not self._stop.is_set():
            try:
                if time.monotonic() - swept_at >= SWEEP_EVERY_S:
                    swept_at = time.monotonic()
                    self.sweep_once()
                poll_once(self._life)
                store = self._life.store
                due = store.next_due()
                now = self._life.clock.now_ms()
                wait = MAX_IDLE_WAIT if due is None else min(MAX_IDLE_WAIT, (due - now) / 1000)
                if wait > LOCAL_WAIT and not self._stop.is_set():
                    store.wait_for_signal(wait - LOCAL_WAIT)
                elif wait > 0:
                    self._stop.wait(wait)  # BLPOP timeouts are only as fine as Redis's hz
            except Exception:
                log.exception("timer poller error; retrying in 1s")
                self._stop.wait(1.0)
