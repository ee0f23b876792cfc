"""A short seeded chaos run: the mixed workload under every kind of fault keeps every invariant.

Replay a failure with the command its report prints (``python -m bench.chaos --seed 1 --runs
12 ...``): the fault kinds and their moments follow the seed; which process a kill hits depends
on what runs at that moment. ``bench/chaos.py`` runs the same thing at 1,000 runs.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.chaos.harness import ChaosConfig, run_chaos

pytestmark = pytest.mark.slow

# Seed 1's schedule (a fault every second on average) has every kind within its first 6 s:
# a pool process kill, a Redis restart, a connection kill, crash points, a whole worker kill.
SEED = 1


@pytest.mark.timeout(240)
def test_a_seeded_chaos_run_keeps_every_invariant() -> None:
    # given 12 orders (a step, a sleep, two parallel branches, an invoke of a concurrency-
    # limited child, a run_task, a send_event starting a keyed-concurrency run, a wait for a
    # confirmation, a last step), cron ticks, on two prefork workers and one AOF Redis
    config = ChaosConfig(seed=SEED, orders=12, workers=2, concurrency=2, fault_interval=1.0,
                         max_inflight=12, fault_tail=15, fault_window_max=30,
                         settle_timeout=100)

    # when faults hit them on the seed's schedule: pool processes and whole workers SIGKILLed,
    # Redis SIGKILLed and restarted on its append-only file, every connection dropped, and
    # crash points armed
    result = run_chaos(config)

    # then every invariant holds, and the faults really happened
    report = result.report()
    print(report)
    assert not result.harness_errors, report
    assert not result.exits, report  # no worker process exited on its own
    assert result.violations == [], report
    kinds = Counter(f.kind for f in result.faults)
    assert kinds["kill-child"] + kinds["kill-worker"] >= 3, report
    assert kinds["redis-restart"] >= 1, report
    assert kinds["client-kill"] >= 1, report
    assert result.crashes, report
    figures = result.figures()
    assert figures["runs_by_function_and_status"].get("chaos-order:completed", 0) >= 6, report
