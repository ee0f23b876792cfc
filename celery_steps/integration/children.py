"""A worker's main process keeps its pool children alive, and reaps the host's dead processes.

A pool child executing a step may hold the GIL for minutes in one C call (a big sort, a
regex): its own heartbeat thread cannot run, but the main process can. Every ``lease/5`` the
main process extends the key of each of its live children. And it looks at every process of
its host that beats for itself (the store lists them): one whose pid is gone, or was reused
by another process, is reaped at once (its key deleted, its runs woken), so the run a killed
child held (out of memory, a hard time limit, SIGKILL) is taken over in a second or two
instead of after the lease. Any worker on the host does it, for any worker of the host.
"""

from __future__ import annotations

import logging
import socket
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


def gone(proc: str) -> bool:
    """True when process ``host:pid:start`` of this host no longer runs."""
    _, pid, _ = proc.split(":", 2)
    return not pid.isdigit() or not alive(int(pid)) or process_id(int(pid)) != proc


class ChildHeartbeat:
    """A daemon thread in a worker's main process: beats for its children, reaps the dead."""

    def __init__(self, runtime: Runtime, worker: Any) -> None:
        self._runtime = runtime
        self._worker = worker
        self._host = socket.gethostname()
        self._stop = threading.Event()
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
        """Extend every live child's key; reap every dead process of this host."""
        store = self._runtime.store
        ttl = int(float(self._runtime.settings.lease_ttl) * 1000)
        for pid in child_pids(self._worker) or []:
            if alive(pid):
                store.beat(process_id(pid), ttl_ms=ttl)  # extends its key, keeps its runs
        for proc in store.host_procs(self._host):
            if gone(proc):
                store.reap(proc)

    def _loop(self) -> None:
        interval = min(1.0, float(self._runtime.settings.lease_ttl) / 5)
        while True:
            try:
                self.beat_once()
            except Exception:
                log.warning("celery-steps could not beat for the pool's processes",
                            exc_info=True)
            if self._stop.wait(interval):
                return
