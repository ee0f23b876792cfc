"""The processes of a chaos run: two redis-servers and ``celery worker`` subprocesses.

- the *store* Redis (broker and state store) runs with ``appendonly yes`` and
  ``appendfsync always``: every write is in the append-only file before Redis answers, so
  killing it with ``SIGKILL`` and starting it again on the same file loses nothing that was
  acknowledged (``everysec`` could lose up to a second of acknowledged writes to a machine
  crash, and with them checkpoints whose steps would then run again);
- the *ledger* Redis (:mod:`tests.chaos.ledger`) is never touched by a fault;
- each worker is a real ``celery -A tests.chaos.app worker`` (prefork) in its own session, so
  killing its process group kills its pool children too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from tests.conftest import ROOT, redis_server_executable, wait_until

APP = "tests.chaos.app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """A redis-server on a fixed port that can be killed and started again on its files."""

    def __init__(self, workdir: Path, *, aof: bool) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.aof = aof
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if self.aof
                       else ["--appendonly", "no"])
        self.proc = subprocess.Popen(
            [redis_server_executable(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir), "--save", "", "--maxmemory-policy", "noeviction",
             "--logfile", str(self.dir / "redis.log"), *persistence],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())  # LOADING (replaying the AOF) raises
            except redis.RedisError:
                return False

        wait_until(answers, timeout=30, interval=0.02, message=f"redis-server on {self.port}")
        client.close()

    def kill(self) -> None:
        """``SIGKILL``: no shutdown, no final write; only what the AOF holds survives."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def drop_clients(self) -> int:
        """``CLIENT KILL`` every normal and pub/sub connection; returns how many were closed."""
        client = redis.Redis(port=self.port, socket_timeout=2)
        closed = 0
        try:
            for kind in ("normal", "pubsub"):
                closed += int(client.execute_command("CLIENT", "KILL", "TYPE", kind))  # type: ignore[no-untyped-call]
        finally:
            client.close()
        return closed

    def stop(self) -> None:
        self.kill()


def _stat(pid: int) -> tuple[int, int] | None:
    """``(ppid, pgrp)`` of a live process, None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[1]), int(fields[2])


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


class Worker:
    """One ``celery worker`` process group."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], started_at: float) -> None:
        self.name = name
        self.proc = proc
        self.started_at = started_at

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def group(self) -> list[int]:
        """Every live process of the worker: its main process and its pool children."""
        return [pid for pid in _all_pids() if (st := _stat(pid)) is not None and st[1] == self.pid]

    def children(self) -> list[int]:
        return [pid for pid in _all_pids() if (st := _stat(pid)) is not None and st[0] == self.pid]


class Workers:
    """Starts, kills and replaces workers; every one is killed at the end, whatever happens."""

    def __init__(self, env: dict[str, str], logs: Path, *, concurrency: int = 2) -> None:
        self.env = env
        self.logs = logs
        self.concurrency = concurrency
        self.live: list[Worker] = []
        self.everyone: list[Worker] = []
        self._n = 0

    def start(self) -> Worker:
        self._n += 1
        name = f"w{self._n}"
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", APP, "worker", "-P", "prefork",
             "-c", str(self.concurrency), "-n", f"{name}@%h", "-Q", self.env["CHAOS_NAMESPACE"],
             "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=dict(self.env, CHAOS_WORKER_NAME=name), start_new_session=True,
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        worker = Worker(name, proc, time.time())
        self.live.append(worker)
        self.everyone.append(worker)
        return worker

    def kill(self, worker: Worker) -> list[int]:
        """``SIGKILL`` the worker's whole process group; returns the pids that were in it
        (listed while the group is stopped, so no pool process forked meanwhile is missed)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGSTOP)
        pids = worker.group()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.proc.wait(15)
        if worker in self.live:
            self.live.remove(worker)
        return pids

    def reap_dead(self) -> list[tuple[Worker, list[int]]]:
        """Workers whose main process exited on its own (killed by nobody here), each with
        the pool children it left behind, which are killed now."""
        dead = []
        for worker in [w for w in self.live if not w.alive()]:
            orphans = worker.group()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
            self.live.remove(worker)
            dead.append((worker, orphans))
        return dead

    def stop_all(self) -> None:
        for worker in self.everyone:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
        for worker in self.everyone:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(15)
        self.live.clear()
