"""A prefork worker's main process keeps its pool children's process keys alive.

A pool child executing a step may hold the GIL for minutes in one C call (a big sort, a
regex): its own heartbeat thread cannot run, but the main process can. Every ``lease/5`` the
main process beats the key of each live child, and the moment it sees a child gone (killed,
out of memory, a hard time limit), it deletes that child's key, so the run the child held is
taken over at once instead of after the lease.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery_steps.engine.liveness import process_id
from celery_steps.runtime import Runtime

log = logging.getLogger("celery_steps.children")


def child_pids(worker: Any) -> list[int] | None:
    """The pids of a prefork worker's pool processes; None for other pools."""
    inner = getattr(getattr(worker, "pool", None), "_pool", None)
    processes = getattr(inner, "_pool", None)
    if not isinstance(processes, list):
        return None
    return [p.pid for p in list(processes) if getattr(p, "pid", None)]


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, dead but not yet reaped, is not alive)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


class ChildHeartbeat:
    """A daemon thread in the worker's main process beating for its pool children."""

    def __init__(self, runtime: Runtime, worker: Any) -> None:
        self._runtime = runtime
        self._worker = worker
        self._stop = threading.Event()
        self._known: dict[int, str] = {}
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="celery-steps-children",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def beat_once(self) -> None:
        """Beat every live child; reap every child that died since the last beat."""
        store = self._runtime.store
        ttl = int(float(self._runtime.settings.lease_ttl) * 1000)
        for pid in child_pids(self._worker) or []:
            if pid not in self._known:
                self._known[pid] = process_id(pid)
        for pid, proc in list(self._known.items()):
            if alive(pid):
                store.beat(proc, ttl_ms=ttl)
            else:
                store.reap(proc)
                del self._known[pid]

    def _loop(self) -> None:
        interval = float(self._runtime.settings.lease_ttl) / 5
        while not self._stop.wait(interval):
            try:
                self.beat_once()
            except Exception:
                log.warning("celery-steps could not beat for the pool's processes",
                            exc_info=True)
