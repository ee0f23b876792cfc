"""Wake-ups end to end: sleeping runs resumed by real ``celery worker`` nodes, on time?

Run from the repository root::

    .venv/bin/python -m bench.wakeups            # 1,000 sleepers on one node, 10,000 on two
    .venv/bin/python -m bench.wakeups --quick    # 300 on one node, 1,000 on two

It starts its own throwaway ``redis-server`` (free TCP port, no persistence, killed at exit)
and, for each scenario, fresh ``celery -A bench.wake_app worker -P prefork`` processes (one
*node* is one such process with its pool; ``--concurrency`` children each, default the
number of CPUs) in a fresh namespace, always killed afterwards. Every scenario runs twice in
the same invocation: with the wake path under test (own-pool hand-off, batches of 20) and the
baseline, ``steps_wake_batch = 1`` and ``steps_wake_local = False``: one Celery task per
wake-up, through the broker.

(a) **Sleepers**: N runs of ``sleeper`` (``ctx.step.sleep_until("nap", due)``, then
    ``ctx.step.run("woke", ...)``, which returns the wall-clock time it executed), their due
    times spread evenly over one second (N per second), started early enough that every run
    is asleep well before the first is due. Lateness = the ``woke`` step's time - the run's
    due time: p50/p99/max, and when the last run resumed after the first was due.
(b) **Event to resumed run completed**: runs of ``waiter``
    (``ctx.step.wait_for_event("go", event="bench/go", match="data.k")``) wait; for each
    sample the bench sends the matching event and times ``steps.send`` -> the run completed
    (``steps.wait_for_run``, which blocks on the run's end: no polling).

Targets (informational; the script never fails on a miss): (a) p99 <= 50 ms for 1,000 on one
node, every one of 10,000 resumed within 2 s of the first due time on two nodes; (b) p50 <=
10 ms. Worker logs go to a temporary directory, printed when a scenario fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from bench.nodes import Nodes, send_all, statuses, wait_status
from bench.step_overhead import RedisServer, pct
from bench.wake_app import make_app
from celery_steps.runtime.runs import run_id_for

BASELINE = {"steps_wake_batch": 1, "steps_wake_local": False}
NEW = {"steps_wake_batch": 20}  # own-pool hand-off (the default) with batches of 20
LATENESS_TARGET_MS = 50.0
ALL_RESUMED_TARGET_S = 2.0
EVENT_TARGET_MS = 10.0


# -- (a) sleepers ------------------------------------------------------------------------------
def sleepers(url: str, label: str, *, nodes: int, n: int, conf: dict[str, Any],
             concurrency: int, logs: Path, start_rate: float,
             profile: Path | None = None) -> dict[str, Any]:
    """N sleepers due evenly over one second; lateness of their resumed step. Returns
    ``{"retry_rate": ...}`` when the runs could not all be asleep before the first due."""
    ns = f"bw{uuid.uuid4().hex[:8]}"
    app, steps = make_app(url, ns, conf)
    client = redis.Redis.from_url(url)
    store = steps.runtime.store
    cluster = Nodes(url, ns, conf, logs)
    try:
        cluster.start(nodes, concurrency)
        # warm up every node's children (imports, scripts, connections)
        warm = send_all(steps, [{"name": "bench/sleep", "data": {"due": time.time() * 1000 + 300,
                                                              "w": i}}
                             for i in range(8 * nodes * concurrency)])
        warm_keys = [store.run_key(run_id_for("sleeper", e)) for e in warm]
        wait_status(client, warm_keys, {b"completed"}, 60)

        margin_s = 2.0 + 1.3 * n / start_rate
        first_due = (time.time() + margin_s) * 1000
        dues = [first_due + i * 1000.0 / n for i in range(n)]
        t0 = time.monotonic()
        ids = send_all(steps, [{"name": "bench/sleep", "data": {"due": due, "i": i}}
                            for i, due in enumerate(dues)])
        keys = [store.run_key(run_id_for("sleeper", e)) for e in ids]
        try:
            wait_status(client, keys, {b"sleeping"}, margin_s - 0.5, every=0.2)
        except TimeoutError:  # started too slowly to be all asleep before the first due
            asleep = sum(s == b"sleeping" for s in statuses(client, keys))
            return {"retry_rate": max(20.0, asleep / (time.monotonic() - t0))}
        asleep_s = time.monotonic() - t0
        ahead_ms = first_due - time.time() * 1000
        load = os.getloadavg()[0]
        time.sleep(max(0.0, ahead_ms / 1000 - 0.3))
        profiler = _profile(cluster, profile, label, nodes, n)
        cpu0 = _cpu(cluster, client)
        time.sleep(1.3)
        wait_status(client, keys, {b"completed", b"failed"}, 300, every=0.25)
        cpu = {k: (v - cpu0.get(k, 0.0)) * 1000 / n for k, v in _cpu(cluster, client).items()}
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
            profiler.wait(60)
        woke: list[float] = []
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(key + ":steps", "woke")
                pipe.hget(key, "status")
            replies = pipe.execute()
        failed = 0
        for raw, status in zip(replies[::2], replies[1::2], strict=True):
            failed += status != b"completed"
            woke.append(float(json.loads(raw)["result"]) if raw else float("nan"))
        late = [w - d for w, d in zip(woke, dues, strict=True) if w == w]
        return {
            "label": label, "nodes": nodes, "n": n, "conf": conf, "failed": failed,
            "asleep_s": asleep_s, "ahead_ms": ahead_ms, "load": load,
            "p50": pct(late, 50), "p99": pct(late, 99), "max": max(late),
            "last_s": (max(w for w in woke if w == w) - first_due) / 1000,
            "start_rate": n / asleep_s, "cpu": cpu,
        }
    finally:
        cluster.stop()
        client.close()
        app.close()


def _cpu(cluster: Nodes, client: redis.Redis) -> dict[str, float]:
    """CPU seconds used so far: the nodes' main processes, their pool children, Redis."""
    ticks = os.sysconf("SC_CLK_TCK")

    def used(pid: int) -> float:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError):
            return 0.0

    out = {"main": 0.0, "children": 0.0}
    for pid in cluster.pids():
        out["main"] += used(pid)
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as kids:
                out["children"] += sum(used(int(c)) for c in kids.read().split())
        except OSError:
            pass
    info = client.info("cpu")
    out["redis"] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return out


def _profile(cluster: Nodes, folder: Path | None, label: str, nodes: int,
             n: int) -> subprocess.Popen[bytes] | None:
    """py-spy (if installed) sampling every process of the first node from now on, as
    collapsed stacks in ``folder``."""
    spy = Path(sys.executable).parent / "py-spy"
    if folder is None or not spy.exists():
        return None
    out = folder / f"{label}-{nodes}nodes-{n}.txt"
    return subprocess.Popen(
        [str(spy), "record", "--subprocesses", "--format", "raw", "--rate", "200",
         "-o", str(out), "--pid", str(cluster.pids()[0])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- (b) event to resumed run completed --------------------------------------------------------
def event_to_completed(url: str, label: str, *, conf: dict[str, Any], samples: int,
                       concurrency: int, logs: Path) -> dict[str, Any]:
    ns = f"bw{uuid.uuid4().hex[:8]}"
    app, steps = make_app(url, ns, conf)
    client = redis.Redis.from_url(url)
    store = steps.runtime.store
    cluster = Nodes(url, ns, conf, logs)
    try:
        cluster.start(1, concurrency)
        total = samples + 5
        ids = send_all(steps, [{"name": "bench/wait", "data": {"k": k}} for k in range(total)])
        run_ids = [run_id_for("waiter", e) for e in ids]
        wait_status(client, [store.run_key(r) for r in run_ids], {b"waiting"}, 60)
        took: list[float] = []
        for k, run_id in enumerate(run_ids):
            time.sleep(0.05)  # the previous run's end, its events and their routing settle
            t0 = time.perf_counter()
            steps.send({"name": "bench/go", "data": {"k": k}})
            run = steps.wait_for_run(run_id, timeout=30)
            took.append((time.perf_counter() - t0) * 1000)
            if run.status != "completed":
                raise RuntimeError(f"waiter {run_id} ended {run.status}")
        took = took[5:]  # the first few warm the path up
        return {"label": label, "conf": conf, "samples": len(took), "p50": pct(took, 50),
                "p90": pct(took, 90), "max": max(took)}
    finally:
        cluster.stop()
        client.close()
        app.close()


# -- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wakeups",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 sleepers, 1,000 on two nodes")
    parser.add_argument("--sleepers", type=int, help="sleepers on one node (1,000)")
    parser.add_argument("--sleepers-two", type=int, help="sleepers on two nodes (10,000)")
    parser.add_argument("--samples", type=int, default=30, help="event-to-completed samples")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2,
                        help="pool processes per node")
    parser.add_argument("--only", choices=("sleepers", "events"), help="one part only")
    parser.add_argument("--new-only", action="store_true", help="skip the baseline runs")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy the first node during the wake-ups, into DIR")
    parser.add_argument("--redis-server", help="redis-server binary (default: from PATH)")
    args = parser.parse_args(argv)
    one = args.sleepers or (300 if args.quick else 1000)
    two = args.sleepers_two or (1000 if args.quick else 10_000)

    logging.basicConfig(level=logging.WARNING)
    server = RedisServer(args.redis_server).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logs = Path(tempfile.mkdtemp(prefix="bench-wakeups-"))
    try:
        return _run(server.url, one, two, args, logs)
    finally:
        server.stop()


def _run(url: str, one: int, two: int, args: argparse.Namespace, logs: Path) -> int:
    client = redis.Redis.from_url(url)
    info = client.info("server")
    load = os.getloadavg()
    print(f"# celery-steps wake-ups  ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cpu, "
          f"Python {sys.version.split()[0]}, redis {info['redis_version']}, prefork nodes "
          f"of {args.concurrency} processes, load {load[0]:.2f}; worker logs in {logs})")
    variants = [("new", NEW)] if args.new_only else [("baseline", BASELINE), ("new", NEW)]
    rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    if args.only != "events":
        for nodes, n in ((1, one), (2, two)):
            rate = 100.0 * nodes
            for name, conf in variants:
                for _ in range(4):
                    row = sleepers(url, name, nodes=nodes, n=n, conf=conf,
                                   concurrency=args.concurrency, logs=logs, start_rate=rate,
                                   profile=args.profile)
                    if "retry_rate" not in row:
                        break
                    rate = row["retry_rate"] * 0.8
                    print(f"  ({name}: starting {n:,} runs took too long; again at "
                          f"{rate:.0f} per s)", flush=True)
                else:
                    raise RuntimeError(f"could not get {n:,} runs asleep in time")
                rate = max(20.0, row["start_rate"])
                rows.append(row)
                print(f"  {name}: {nodes} node(s), {n:,} sleepers: p50 {row['p50']:.1f} p99 "
                      f"{row['p99']:.1f} max {row['max']:.1f} ms; last resumed "
                      f"{row['last_s']:.2f} s after the first due; CPU ms per wake: "
                      + ", ".join(f"{k} {v:.2f}" for k, v in row["cpu"].items()), flush=True)
    if args.only != "sleepers":
        for name, conf in variants:
            row = event_to_completed(url, name, conf=conf, samples=args.samples,
                                     concurrency=args.concurrency, logs=logs)
            events.append(row)
            print(f"  {name}: event -> completed p50 {row['p50']:.1f} ms", flush=True)

    if rows:
        print("\n## sleepers due evenly over one second: lateness of the resumed step (ms)\n")
        print("| path | nodes | runs | p50 | p99 | max | last resumed after first due (s) | "
              "failed | all asleep (s) | first due ahead of that (ms) | load |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['label']} | {r['nodes']} | {r['n']:,} | {r['p50']:.1f} | "
                  f"{r['p99']:.1f} | {r['max']:.1f} | {r['last_s']:.2f} | {r['failed']} | "
                  f"{r['asleep_s']:.1f} | {r['ahead_ms']:.0f} | {r['load']:.2f} |")
    if events:
        print(f"\n## event -> resumed run completed, one node ({args.samples} samples, ms)\n")
        print("| path | p50 | p90 | max |")
        print("|---|---:|---:|---:|")
        for e in events:
            print(f"| {e['label']} | {e['p50']:.1f} | {e['p90']:.1f} | {e['max']:.1f} |")

    print("\n## targets (informational)\n")
    for r in rows:
        if r["label"] != "new":
            continue
        if r["nodes"] == 1:
            ok = r["p99"] <= LATENESS_TARGET_MS and not r["failed"]
            print(f"{'PASS' if ok else 'MISS'}  {r['n']:,} on one node: p99 {r['p99']:.1f} ms "
                  f"(target <= {LATENESS_TARGET_MS:g})")
        else:
            ok = r["last_s"] <= ALL_RESUMED_TARGET_S and not r["failed"]
            print(f"{'PASS' if ok else 'MISS'}  {r['n']:,} on two nodes: all resumed "
                  f"{r['last_s']:.2f} s after the first due (target <= "
                  f"{ALL_RESUMED_TARGET_S:g})")
    for e in events:
        if e["label"] == "new":
            ok = e["p50"] <= EVENT_TARGET_MS
            print(f"{'PASS' if ok else 'MISS'}  event -> completed p50 {e['p50']:.1f} ms "
                  f"(target <= {EVENT_TARGET_MS:g})")
    end = os.getloadavg()
    print(f"\nload average at start {load[0]:.2f}, at end {end[0]:.2f} (on {os.cpu_count()} "
          "cpu, shared with other users)")
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
