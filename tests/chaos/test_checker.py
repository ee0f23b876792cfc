"""The chaos checker tells a legitimate re-execution from a violation (on made-up snapshots)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from celery_steps import Event
from celery_steps.runs import EventInfo
from celery_steps.store.base import RunRecord
from celery_steps.store.redis_keys import KeyLayout
from tests.chaos.checker import (
    CONCURRENCY,
    EVENT_ROUTING,
    EXPIRY,
    PARENT,
    RUN_NOT_ENDED,
    STEP_TWICE,
    TASK,
    Findings,
    Snapshot,
    check,
    check_concurrency,
    check_expiry,
    check_runs_ended,
    check_steps_once,
    executions,
)
from tests.chaos.driver import OrderPlan, Sent
from tests.chaos.workload import CHARGE, NOTIFY, ORDER

NS = "chaos1"
LAYOUT = KeyLayout(NS, 2)  # two shards: keys of either shard are recognised


def snapshot(**fields: Any) -> Snapshot:
    base: dict[str, Any] = dict(
        namespace=NS, shards=LAYOUT.shards, runs={}, events={}, keys=[], waiters={}, timers=[],
        execs=[], seen={}, crashes=[], tasks=[], crons=[], messages=[], kills=[], outages=[],
        taken_at=100.0)
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


def test_a_lost_execution_whose_checkpoint_met_redis_down_is_legitimate() -> None:
    # given a first execution that ended at t=1.2 while Redis was down (t=1.0 to 2.0), was
    # not stored, and whose process lived on; then a second one
    snap = snapshot(runs={"r1": run("r1", steps=stored("b"))},
                    execs=execution("a", 1.0, 1.2, pid=10) + execution("b", 5.0, 5.2, pid=11),
                    seen={"r1|reserve": {"x": "b", "t": 5.3}}, outages=[(1.0, 2.0)])

    # then nothing is violated; with the outage ten seconds later, it is
    assert steps_findings(snap) == []
    snap.outages = [(11.0, 12.0)]
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
    done, live = LAYOUT.run_keys("done"), LAYOUT.run_keys("live")
    waiter = LAYOUT.waiter_index(LAYOUT.shard_of("done"), "chaos/confirm", "data.order", "1")
    keys = [(LAYOUT.timers(0), -1), (LAYOUT.timers(1), -1), (LAYOUT.fn_index(1, ORDER), -1),
            (LAYOUT.status_index(0, "waiting"), -1), (LAYOUT.functions, -1),
            (LAYOUT.host("vm"), -1), (LAYOUT.proc("vm-1"), 900), (live.meta, -1),
            (done.meta, 5000), (done.steps, -1), (LAYOUT.event("e1"), -1),
            (live.steps, 5000), (waiter, -1), (waiter.split(":m:")[0] + ":paths", -1)]
    found = Findings()

    # then the ended run's steps, the event, the live run's expiring key and a waiter of an
    # ended run are reported, and nothing else
    check_expiry(snapshot(runs=runs, keys=keys,
                          waiters={waiter: ["done"]}), found)
    assert [v.kind for v in found.violations] == [EXPIRY] * 4
    details = " ".join(v.detail for v in found.violations)
    for key in (done.steps, LAYOUT.event("e1"), live.steps, waiter):
        assert key in details


# -- the whole checker on one fabricated order: clean, then with one thing broken ------------
PLAN = OrderPlan(0, "order-1-0", {"order": 0, "cents": 500}, False, False, False, False)


def routed(event_id: str, *run_ids: str) -> EventInfo:
    return EventInfo(event=Event(name="x", id=event_id), routed=True, run_ids=list(run_ids),
                     received_at=datetime(2026, 1, 1, tzinfo=timezone.utc))


def one_order() -> dict[str, Any]:
    """The snapshot of one order that went all the way to its (never confirmed) wait: its
    child charged it, its task gave the receipt, its shipped event started a notify run."""
    child = {"cents": 500, "x": "b"}
    order = RunRecord(id="r1", function_id=ORDER, status="waiting", created_at=0,
                      event_ids=[PLAN.event_id], steps={
                          "reserve": {"op": "run", "status": "completed", "result": {"x": "a"},
                                      "pos": 0},
                          "charge": {"op": "invoke", "status": "completed", "child": "c1",
                                     "result": child, "pos": 1},
                          "receipt": {"op": "run_task", "status": "completed", "pos": 2,
                                      "result": {"receipt": "r-r1", "cents": 500}},
                          "ship": {"op": "send_event", "status": "completed",
                                   "result": ["ship-1"], "pos": 3},
                          "confirm": {"op": "wait_for_event", "status": "waiting", "pos": 4}})
    charge = RunRecord(id="c1", function_id=CHARGE, status="completed", created_at=0,
                       event_ids=["invoke-c1"], output=child, parent={"run_id": "r1"},
                       steps={"charge": {"op": "run", "status": "completed",
                                         "result": {"x": "b"}}})
    notify = RunRecord(id="n1", function_id=NOTIFY, status="completed", created_at=0,
                       event_ids=["ship-1"], output="0")
    return dict(
        runs={"r1": order, "c1": charge, "n1": notify},
        events={PLAN.event_id: routed(PLAN.event_id, "r1"), "ship-1": routed("ship-1", "n1")},
        execs=[*execution("a", 1.0, 1.1, 10), *execution("b", 2.0, 2.2, 11, run_id="c1",
                                                          step="charge", fn=CHARGE)],
        seen={"r1|reserve": {"x": "a", "t": 1.2}, "c1|charge": {"x": "b", "t": 2.3}},
        tasks=[{"run": "r1", "t": 3.0, "pid": 10}])


def violations(**fields: Any) -> list[str]:
    found = check(snapshot(**fields), [PLAN], Sent(orders={0: 0.5}))
    return [v.kind for v in found.violations]


def test_a_fabricated_order_that_kept_every_invariant_passes_the_whole_checker() -> None:
    # given the snapshot of an order that did everything right, then nothing is reported
    assert violations(**one_order()) == []


def test_a_lost_run_is_reported() -> None:
    # given the order's event was sent and routed, but its run is gone from the store
    fields = one_order()
    del fields["runs"]["r1"]

    # then the event is reported (it started no run), and the orphaned child too
    found = violations(**fields)
    assert EVENT_ROUTING in found
    assert PARENT in found


def test_a_step_executed_twice_outside_the_at_least_once_window_is_reported() -> None:
    # given a second execution of the checkpointed 'reserve' step, by a process never killed,
    # starting after the handler had the first execution's stored result
    fields = one_order()
    fields["execs"] += execution("c", 4.0, 4.1, 12)

    # then it is reported as a checkpointed step executed twice
    assert violations(**fields) == [STEP_TWICE]


def test_a_run_stuck_before_its_wait_is_reported() -> None:
    # given the order still 'running' at its run_task step, with no timer left to move it
    fields = one_order()
    order = fields["runs"]["r1"]
    order.status = "running"
    order.steps = {k: v for k, v in order.steps.items() if k in ("reserve", "charge")}
    order.steps["receipt"] = {"op": "run_task", "status": "waiting", "pos": 2}
    fields["events"].pop("ship-1")
    fields["runs"].pop("n1")

    # then it is reported as neither ended nor legitimately waiting
    assert violations(**fields) == [RUN_NOT_ENDED]


def test_an_invoke_step_that_did_not_get_its_childs_output_is_reported() -> None:
    # given the child ended with an output other than the one its parent's step holds
    fields = one_order()
    fields["runs"]["c1"].output = {"cents": 1, "x": "b"}

    # then the parent link is reported
    assert violations(**fields) == [PARENT]


def test_a_run_task_step_resolved_without_its_task_running_is_reported() -> None:
    # given the run_task step completed, but the ledger never saw the Celery task run
    fields = one_order()
    fields["tasks"] = []

    # then the run_task link is reported
    assert violations(**fields) == [TASK]
