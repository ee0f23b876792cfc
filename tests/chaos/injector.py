"""Faults on a seeded schedule: kill pool processes and whole workers, restart Redis, drop
every client connection, and arm the engine's crash points.

The schedule is drawn from ``random.Random(seed)`` up front, one fault at a time, always the
same four numbers per fault (the delay before it, its kind and two choices), so a seed gives
the same sequence of fault kinds at the same moments. Which process a kill hits depends on
what is running at that moment: the choices pick an index among the candidates then.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from celery_steps.faults import POINTS
from tests.chaos.cluster import RedisProcess, Workers
from tests.chaos.ledger import Ledger

KINDS = ("kill-child", "kill-worker", "redis-restart", "client-kill", "crash-point")
DEFAULT_WEIGHTS = {"kill-child": 4.0, "kill-worker": 1.0, "redis-restart": 1.0,
                   "client-kill": 2.0, "crash-point": 3.0}
BUSY_SHARE = 0.75  # a child kill aims at a process in the middle of a step this often
RECENT_EXECS = 60  # how far back in the ledger a child kill looks for steps in progress


@dataclass
class Fault:
    """One fault as it happened: when, what, the processes it killed, and (for Redis
    restarts) when Redis answered again."""

    t: float
    kind: str
    detail: str
    pids: list[int] = field(default_factory=list)
    until: float | None = None

    def line(self, t0: float) -> str:
        pids = f" pids={self.pids}" if self.pids else ""
        return f"+{self.t - t0:8.3f}s {self.kind:<14} {self.detail}{pids}"


def parse_weights(spec: str) -> dict[str, float]:
    """``"kill-child=4,redis-restart=1"`` (kinds left out get 0); ``"all"``: the defaults."""
    if spec.strip() in ("", "all"):
        return dict(DEFAULT_WEIGHTS)
    weights = dict.fromkeys(KINDS, 0.0)
    for part in spec.split(","):
        kind, _, weight = part.strip().partition("=")
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
        weights[kind] = float(weight or 1)
    if not any(weights.values()):
        raise ValueError(f"no fault kind has a positive weight in {spec!r}")
    return weights


class Injector:
    """Injects faults until stopped, and replaces workers that died."""

    def __init__(self, rng: random.Random, weights: dict[str, float], store: RedisProcess,
                 workers: Workers, ledger: Ledger, arm_dir: Path, *, interval: float,
                 max_down: float) -> None:
        self.rng = rng
        self.kinds = [k for k in KINDS if weights.get(k, 0) > 0]
        self.weights = [weights[k] for k in self.kinds]
        self.store, self.workers, self.ledger = store, workers, ledger
        self.arm_dir = arm_dir
        self.interval, self.max_down = interval, max_down
        self.log: list[Fault] = []
        self.exits: list[Fault] = []  # workers that exited without being killed here
        self.errors: list[str] = []

    # -- the loop -----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Inject faults until ``stop`` is set (run in a thread)."""
        while not stop.is_set():
            delay = self.rng.expovariate(1 / self.interval)
            kind = self.rng.choices(self.kinds, self.weights)[0]
            u1, u2 = self.rng.random(), self.rng.random()
            due = time.monotonic() + delay
            while not stop.is_set() and time.monotonic() < due:
                self.replace_dead()
                stop.wait(min(0.5, max(0.0, due - time.monotonic())))
            if stop.is_set():
                break
            try:
                self.inject(kind, u1, u2)
            except Exception as exc:  # a harness problem: reported, never hidden
                self.errors.append(f"{kind}: {exc!r}")

    def inject(self, kind: str, u1: float, u2: float) -> None:
        if kind == "kill-child":
            self._kill_child(u1, u2)
        elif kind == "kill-worker":
            self._kill_worker(u1, u2)
        elif kind == "redis-restart":
            down = 0.1 + u1 * max(0.0, self.max_down - 0.1)
            t = time.time()
            self.store.kill()
            time.sleep(down)
            self.store.start()
            back = time.time()
            self.log.append(Fault(t, kind, f"down {back - t:.2f}s", until=back))
        elif kind == "client-kill":
            t = time.time()
            self.log.append(Fault(t, kind, f"{self.store.drop_clients()} connections"))
        else:
            self._arm(u1)

    # -- kinds ----------------------------------------------------------------------------------
    def _kill_child(self, u1: float, u2: float) -> None:
        children = [pid for w in self.workers.live for pid in w.children()]
        busy = [pid for pid in self._busy_pids() if pid in children]
        candidates = busy if busy and u2 < BUSY_SHARE else children
        if not candidates:
            return
        pid = candidates[int(u1 * len(candidates))]
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        # stamped once the signal is sent: nothing the process records is later than this
        self.log.append(Fault(time.time(), "kill-child", "in a step" if pid in busy else "any",
                              [pid]))

    def _busy_pids(self) -> list[int]:
        """Processes with a step started and not ended among the last ledger entries."""
        recent = self.ledger.r.lrange("chaos:exec", -RECENT_EXECS, -1)
        open_: dict[str, int] = {}
        for raw in recent:
            entry = json.loads(raw)
            if entry["e"] == "start":
                open_[entry["x"]] = entry["pid"]
            else:
                open_.pop(entry["x"], None)
        return sorted(set(open_.values()))

    def _kill_worker(self, u1: float, u2: float) -> None:
        live = [w for w in self.workers.live if w.alive()]
        if len(live) < 2:  # never leave the cluster without a worker
            self._kill_child(u1, u2)
            return
        victim = live[int(u1 * len(live))]
        pids = self.workers.kill(victim)
        t = time.time()  # once the whole group is dead (Workers.kill waits for it)
        replacement = self.workers.start()
        self.log.append(Fault(t, "kill-worker", f"{victim.name} -> {replacement.name}", pids))

    def _arm(self, u1: float) -> None:
        points = sorted(POINTS)
        start = int(u1 * len(points))
        for i in range(len(points)):
            point = points[(start + i) % len(points)]
            armed = self.arm_dir / point
            if not armed.exists():
                armed.touch()
                self.log.append(Fault(time.time(), "crash-point", f"armed {point}"))
                return

    # -- upkeep ---------------------------------------------------------------------------------
    def replace_dead(self) -> None:
        """Start a replacement for every worker that exited on its own."""
        for worker, orphans in self.workers.reap_dead():
            replacement = self.workers.start()
            code = worker.proc.returncode
            self.exits.append(Fault(time.time(), "worker-exit",
                                    f"{worker.name} exited ({code}) -> {replacement.name}",
                                    [worker.pid, *orphans]))

    def disarm(self) -> list[str]:
        """Remove the crash points nobody reached; returns their names."""
        left = []
        for point in POINTS:
            armed = self.arm_dir / point
            if armed.exists():
                armed.unlink()
                left.append(point)
        return sorted(left)
