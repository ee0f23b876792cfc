"""Which process holds a run, and the heartbeat that says it is alive.

A run is held by ``token@proc``. ``proc`` names one OS process, stable for its life and never
reused (host, pid and the process's start time). The process's key in the store is kept
alive by :class:`Heartbeat` (a daemon thread in every process that executes runs) and, in a
prefork worker, also by the worker's main process for each of its pool children, which a long
C call holding a child's GIL cannot starve. When the key lapses the holder is dead: the next
acquire takes the run over and counts a crash.

Each beat also tells the store which ``step.run`` each held run is executing and since when
(:attr:`Heartbeat.running`, kept by the engine in memory), so ``steps show`` can list a step
in progress without a store write per step; the step's checkpoint clears it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from functools import lru_cache

from celery_steps.clock import Clock
from celery_steps.store.base import StateStore

log = logging.getLogger("celery_steps.liveness")
EARLY_BEAT_DELAY = 0.2


@lru_cache(maxsize=4096)
def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), so a reused pid differs."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return fields[19].decode()
    except (OSError, IndexError):
        return "0"


def process_id(pid: int | None = None) -> str:
    """``host:pid:start`` of this process (or of ``pid``, e.g. a pool child)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


class Heartbeat:
    """One daemon thread per process: beats the process key, renews the runs held here."""

    def __init__(self, store_of: Callable[[], StateStore], clock: Clock, lease_ms: int) -> None:
        self._store_of, self._clock, self._lease_ms = store_of, clock, lease_ms
        self._held: dict[str, str] = {}
        self._members: dict[str, str] = {}  # run -> its timer member (woken if we die)
        self._orphans: dict[str, str] = {}  # runs let go of, whose release failed
        # run -> (step key, since ms) of the step.run executing now; written by the engine
        # without the lock (single dict operations), read by the beat
        self.running: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()
        self._pid = 0
        self._proc = ""
        self._beaten_at = 0.0
        self._stop = threading.Event()
        self._soon = threading.Event()  # beat early: the set of runs held here changed

    @property
    def interval(self) -> float:
        return self._lease_ms / 5000

    def process(self) -> str:
        """This process's id (``host:pid:start``), its key made alive first."""
        self.ensure()
        return self._proc

    def new_holder(self) -> str:
        """A fresh holder for one execution in this process (``token@proc``)."""
        self.ensure()
        return f"{uuid.uuid4().hex[:16]}@{self._proc}"

    def ensure(self) -> None:
        """Make sure this process's key is alive before it takes a run (and the thread runs)."""
        with self._lock:
            if self._pid != os.getpid():  # first use, or a fork: a new process, a new thread
                self._pid, self._proc = os.getpid(), process_id()
                self._held.clear()
                self._members.clear()
                self.running.clear()
                self._beaten_at = 0.0
                threading.Thread(target=self._loop, name="celery-steps-heartbeat",
                                 daemon=True).start()
            stale = time.monotonic() - self._beaten_at > self.interval
        if stale:
            self._beat()

    def hold(self, run_id: str, holder: str, member: str) -> None:
        with self._lock:
            self._held[run_id] = holder
            self._members[run_id] = member
        self._soon.set()  # so a reaper learns of it quickly (the thread beats, not this one)

    def drop(self, run_id: str) -> None:
        with self._lock:
            self._held.pop(run_id, None)
            self._members.pop(run_id, None)
        self.running.pop(run_id, None)

    def release(self, run_id: str, holder: str) -> None:
        """Let go of a run this process stopped executing. If the store refuses (down, or
        evicting), the heartbeat retries until it succeeds: a live process must not keep a
        run it no longer executes."""
        try:
            self._store_of().release(run_id, holder)
        except Exception:
            log.warning("could not let go of run %s; retrying with the heartbeat", run_id,
                        exc_info=True)
            with self._lock:
                self._orphans[run_id] = holder

    def _beat(self) -> None:
        with self._lock:
            holding = list(self._members.values())
        self._store_of().beat(self._proc, ttl_ms=self._lease_ms, holding=holding)
        self._beaten_at = time.monotonic()

    def _loop(self) -> None:
        pid = os.getpid()
        while not self._stop.is_set() and os.getpid() == pid:
            if self._soon.wait(self.interval):
                time.sleep(EARLY_BEAT_DELAY)  # let a burst of holds share one beat
            self._soon.clear()
            with self._lock:
                held = list(self._held.items())
                orphans = list(self._orphans.items())
            try:
                self._beat()
                store, now = self._store_of(), self._clock.now_ms()
                for run_id, holder in held:
                    store.renew(run_id, holder, now=now, lease_ms=self._lease_ms,
                                running=self.running.get(run_id))
                for run_id, holder in orphans:
                    store.release(run_id, holder)
                    with self._lock:
                        self._orphans.pop(run_id, None)
            except Exception:  # the next beat tries again; a lapse only risks a takeover
                log.warning("celery-steps heartbeat failed", exc_info=True)
