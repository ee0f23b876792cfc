"""The chaos checker tells a legitimate re-execution from a violation (on made-up snapshots)."""

from __future__ import annotations

from typing import Any

from celery_steps.store.base import RunRecord
from tests.chaos.checker import (
    CONCURRENCY,
    EXPIRY,
    RUN_NOT_ENDED,
    STEP_TWICE,
    Findings,
    Snapshot,
    check_concurrency,
    check_expiry,
    check_runs_ended,
    check_steps_once,
    executions,
)
from tests.chaos.driver import OrderPlan
from tests.chaos.workload import CHARGE, ORDER

NS = "chaos1"


def snapshot(**fields: Any) -> Snapshot:
    base: dict[str, Any] = dict(
        namespace=NS, runs={}, events={}, keys=[], waiters={}, timers=[], execs=[], seen={},
        crashes=[], tasks=[], crons=[], messages=[], kills=[], taken_at=100.0)
    return Snapshot(**{**base, **fields})


def run(run_id: str, status: str = "completed", fn: str = ORDER,
        steps: dict[str, dict[str, Any]] | None = None) -> RunRecord:
    return RunRecord(id=run_id, function_id=fn, status=status, created_at=0,
                     event_ids=["order-1-0"], steps=steps or {})


Entries = list[dict[str, Any]]


def execution(x: str, start: float, end: float | None, pid: int, *, run_id: str = "r1",
              step: str = "reserve", fn: str = ORDER, key: str | None = None) -> Entries:
    fields = {"x": x, "run": run_id, "fn": fn, "step": step, "key": key, "pid": pid}
    entries = [{"e": "start", "t": start, **fields}]
    if end is not None:
        entries.append({"e": "end", "t": end, **fields})
    return entries


def stored(x: str) -> dict[str, dict[str, Any]]:
    return {"reserve": {"op": "run", "status": "completed", "result": {"x": x}}}


def steps_findings(snap: Snapshot) -> list[str]:
    found = Findings()
    check_steps_once(snap, executions(snap), found)
    return [v.kind for v in found.violations]


def test_a_step_re_executed_after_its_process_was_killed_is_legitimate() -> None:
    # given an execution whose process was killed before its checkpoint, then a second one
    snap = snapshot(runs={"r1": run("r1", steps=stored("b"))},
                    execs=execution("a", 1.0, 1.2, pid=10) + execution("b", 5.0, 5.2, pid=11),
                    seen={"r1|reserve": {"x": "b", "t": 5.3}}, kills=[(10, 1.25)])

    # then nothing is violated
    assert steps_findings(snap) == []


def test_a_step_executed_again_after_its_checkpoint_was_seen_is_a_violation() -> None:
    # given a checkpoint the handler saw at t=1.3, and another execution starting at t=5
    snap = snapshot(runs={"r1": run("r1", steps=stored("a"))},
                    execs=execution("a", 1.0, 1.2, pid=10) + execution("b", 5.0, 5.2, pid=11),
                    seen={"r1|reserve": {"x": "a", "t": 1.3}}, kills=[(11, 5.25)])

    # then it is reported
    assert steps_findings(snap) == [STEP_TWICE]


def test_a_lost_execution_whose_process_lived_on_is_a_violation() -> None:
    # given a first execution that ended, was not stored, and whose process was never killed
    snap = snapshot(runs={"r1": run("r1", steps=stored("b"))},
                    execs=execution("a", 1.0, 1.2, pid=10) + execution("b", 5.0, 5.2, pid=11),
                    seen={"r1|reserve": {"x": "b", "t": 5.3}})

    # then it is reported
    assert steps_findings(snap) == [STEP_TWICE]


def test_two_executions_of_one_step_at_the_same_time_are_a_violation() -> None:
    # given a second execution starting while the first one still ran (killed only later)
    snap = snapshot(runs={"r1": run("r1", steps=stored("b"))},
                    execs=execution("a", 1.0, None, pid=10) + execution("b", 2.0, 2.2, pid=11),
                    seen={"r1|reserve": {"x": "b", "t": 2.3}}, kills=[(10, 3.0)])

    # then it is reported
    assert steps_findings(snap) == [STEP_TWICE]


def test_executions_overlapping_beyond_the_limit_exceed_the_concurrency_limit() -> None:
    # given three charge executions of different runs, the third starting before any ended
    execs = [*execution("a", 1.0, 3.0, 10, run_id="r1", fn=CHARGE),
             *execution("b", 1.5, 2.5, 11, run_id="r2", fn=CHARGE),
             *execution("c", 2.0, 4.0, 12, run_id="r3", fn=CHARGE)]
    found = Findings()

    # when the limit is 2, then it is exceeded; when it is 3, it is not
    check_concurrency(executions(snapshot(execs=execs)), CHARGE, 2, 100.0, found)
    assert [v.kind for v in found.violations] == [CONCURRENCY]
    found = Findings()
    check_concurrency(executions(snapshot(execs=execs)), CHARGE, 3, 100.0, found)
    assert found.violations == []


def test_a_killed_execution_no_longer_counts_against_the_limit() -> None:
    # given an execution whose process was killed at t=1.5, and another starting at t=2
    execs = [*execution("a", 1.0, None, 10, run_id="r1", fn=CHARGE),
             *execution("b", 2.0, 3.0, 11, run_id="r2", fn=CHARGE)]
    found = Findings()

    # then a limit of 1 holds
    check_concurrency(executions(snapshot(execs=execs, kills=[(10, 1.5)])), CHARGE, 1, 100.0,
                      found)
    assert found.violations == []


def test_an_execution_starting_just_as_its_process_was_killed_ends_at_its_start() -> None:
    # given a kill stamped 5 ms before an execution of that process started (the signal
    # landed just after), and another execution starting a second later
    execs = [*execution("a", 1.005, None, 10, run_id="r1", fn=CHARGE),
             *execution("b", 2.0, 3.0, 11, run_id="r2", fn=CHARGE)]
    found = Findings()

    # then the first counts as over at once, and a limit of 1 holds
    check_concurrency(executions(snapshot(execs=execs, kills=[(10, 1.0)])), CHARGE, 1, 100.0,
                      found)
    assert found.violations == []


def test_only_an_unconfirmed_order_may_still_wait() -> None:
    # given two order runs waiting at their confirmation; only the first was never confirmed
    waiting = {"confirm": {"op": "wait_for_event", "status": "waiting", "pos": 7}}
    plans = [OrderPlan(0, "order-1-0", {}, False, False, False, False),
             OrderPlan(1, "order-1-1", {}, True, False, False, False)]
    unconfirmed = run("r1", "waiting", steps=waiting)
    confirmed = RunRecord(id="r2", function_id=ORDER, status="waiting", created_at=0,
                          event_ids=["order-1-1"], steps=waiting)
    found = Findings()

    # then only the confirmed one is reported
    check_runs_ended(snapshot(runs={"r1": unconfirmed, "r2": confirmed}), plans, found)
    assert [v.kind for v in found.violations] == [RUN_NOT_ENDED]
    assert "r2" in found.violations[0].detail


def test_keys_without_expiry_are_reported_unless_they_belong_to_live_structures() -> None:
    # given an ended run and a waiting one, and keys with and without an expiry
    runs = {"done": run("done"), "live": run("live", "waiting")}
    keys = [(f"{NS}:timers", -1), (f"{NS}:runs:fn:{ORDER}", -1), (f"{NS}:procs:vm", -1),
            (f"{NS}:run:{{live}}", -1), (f"{NS}:run:{{done}}", 5000),
            (f"{NS}:run:{{done}}:steps", -1), (f"{NS}:evt:e1", -1),
            (f"{NS}:run:{{live}}:steps", 5000), (f"{NS}:w:chaos/confirm:m:data.order=1", -1)]
    found = Findings()

    # then the ended run's steps, the event, the live run's expiring key and a waiter of an
    # ended run are reported, and nothing else
    check_expiry(snapshot(runs=runs, keys=keys,
                          waiters={f"{NS}:w:chaos/confirm:m:data.order=1": ["done"]}), found)
    assert [v.kind for v in found.violations] == [EXPIRY] * 4
    details = " ".join(v.detail for v in found.violations)
    for key in (":run:{done}:steps", ":evt:e1", ":run:{live}:steps", "data.order=1"):
        assert key in details
