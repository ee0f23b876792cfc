"""A short seeded chaos run: the mixed workload under every kind of fault keeps every invariant.

Violations that a finding still open explains (the checker tags them; the finding's scenario in
``tests/chaos/findings.py`` still reproduces, its test in ``test_findings.py`` is an xfail) are
printed but do not fail this test; once a finding is fixed its tag excuses nothing.

Replay a failure with the command its report prints (``python -m bench.chaos --seed 1 --runs
60 ...``): the fault kinds and their moments follow the seed; which process a kill hits depends
on what runs at that moment. ``bench/chaos.py`` runs the same thing at 1,000 runs.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.chaos.checker import KNOWN_LOST_ROUTING, KNOWN_LOST_WAKEUP
from tests.chaos.findings import lost_routing_is_open, lost_wake_up_is_open
from tests.chaos.harness import ChaosConfig, run_chaos

pytestmark = pytest.mark.slow

SEED = 1


def open_findings() -> list[str]:
    """The checker's tags of the findings whose scenario still reproduces."""
    scenarios = {KNOWN_LOST_WAKEUP: lost_wake_up_is_open, KNOWN_LOST_ROUTING: lost_routing_is_open}
    return [tag for tag, still_open in scenarios.items() if still_open()]


@pytest.mark.timeout(480)
def test_a_seeded_chaos_run_keeps_every_invariant() -> None:
    # given 60 orders (a step, a sleep, two parallel branches, an invoke of a concurrency-
    # limited child, a run_task, a send_event starting a keyed-concurrency run, a wait for a
    # confirmation, a last step), cron ticks, on two prefork workers and one AOF Redis
    config = ChaosConfig(seed=SEED, orders=60, workers=2, concurrency=2, fault_interval=1.2,
                         fault_tail=45, fault_window_max=120, settle_timeout=150)

    # when faults hit them on the seed's schedule: pool processes and whole workers SIGKILLed,
    # Redis SIGKILLed and restarted on its append-only file, every connection dropped, and
    # crash points armed
    result = run_chaos(config)

    # then every invariant holds (but for findings still open), and the faults really happened
    report = result.report()
    print(report)
    assert not result.harness_errors, report
    assert not result.exits, report  # no worker process exited on its own
    excused = open_findings()
    unexplained = [v for v in result.violations if not any(tag in v.detail for tag in excused)]
    assert unexplained == [], report
    kinds = Counter(f.kind for f in result.faults)
    assert kinds["kill-child"] + kinds["kill-worker"] >= 3, report
    assert kinds["redis-restart"] >= 1, report
    assert kinds["client-kill"] >= 1, report
    assert result.crashes, report
    figures = result.figures()
    assert figures["runs_by_function_and_status"]["chaos-order:completed"] >= 20, report
