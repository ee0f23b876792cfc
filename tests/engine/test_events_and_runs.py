"""Events: validation, dedupe, fan-out, wildcards, conditions; the runs API."""

from __future__ import annotations

import pytest

from celery_steps import (
    CelerySteps,
    Context,
    Event,
    EventNotFound,
    InvalidEventError,
    RunNotFound,
    TriggerEvent,
)
from celery_steps.testing import settle


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("",), "no name"),
        (("t/x", {"when": object()}), "not JSON"),
        (("t/x", {"blob": "x" * 600_000}), "over the limit"),
        (([],), "empty"),
    ],
)
def test_bad_events_are_rejected_and_nothing_is_stored(
    steps: CelerySteps, args: tuple, problem: str
) -> None:
    @steps.function(id="sink", trigger="t/*")
    def sink(ctx: Context) -> None:
        return None

    with pytest.raises(InvalidEventError, match=problem):
        steps.send(*args)
    assert steps.list_runs() == []


def test_an_event_id_sent_twice_starts_one_run(steps: CelerySteps) -> None:
    @steps.function(id="once", trigger="shop/order.paid")
    def once(ctx: Context) -> int:
        return int(ctx.event.data["order_id"])

    first = steps.send(Event(name="shop/order.paid", data={"order_id": 7}, id="order-7-paid"))
    second = steps.send(Event(name="shop/order.paid", data={"order_id": 7}, id="order-7-paid"))

    assert first == second == ["order-7-paid"]
    assert len(steps.list_runs(function_id="once")) == 1


def test_routing_the_same_event_twice_creates_no_second_run(steps: CelerySteps) -> None:
    @steps.function(id="idem", trigger="t/idem")
    def idem(ctx: Context) -> None:
        return None

    [event_id] = steps.send("t/idem")
    again = steps.runtime.route(event_id)

    assert [r.id for r in steps.runs_for_event(event_id)] == again
    assert len(steps.list_runs(function_id="idem")) == 1


def test_one_event_fans_out_to_every_matching_function(steps: CelerySteps) -> None:
    @steps.function(id="exact", trigger="shop/order.paid")
    def exact(ctx: Context) -> str:
        return "exact"

    @steps.function(id="wild", trigger="shop/*")
    def wild(ctx: Context) -> str:
        return "wild"

    @steps.function(id="big-only", trigger=TriggerEvent("shop/order.paid",
                                                        if_exp="event.data.total > 100"))
    def big_only(ctx: Context) -> str:
        return "big"

    @steps.function(id="other", trigger="crm/contact.created")
    def other(ctx: Context) -> str:
        return "other"

    small = steps.runs_for_event(steps.send("shop/order.paid", data={"total": 5})[0])
    big = steps.runs_for_event(steps.send("shop/order.paid", data={"total": 500})[0])

    assert sorted(r.function_id for r in small) == ["exact", "wild"]
    assert sorted(r.function_id for r in big) == ["big-only", "exact", "wild"]
    assert all(settle(steps, r.id).status == "completed" for r in small + big)


def test_runs_for_an_event_that_matched_nothing_is_empty(steps: CelerySteps) -> None:
    assert steps.runs_for_event(steps.send("nobody/listens")[0], timeout=1) == []


def test_get_run_of_an_unknown_id_raises_run_not_found(steps: CelerySteps) -> None:
    with pytest.raises(RunNotFound, match="no run with id 'nope'"):
        steps.get_run("nope")


def test_list_runs_is_newest_first_and_filters(steps: CelerySteps) -> None:
    @steps.function(id="lister", trigger="t/list")
    def lister(ctx: Context) -> None:
        return None

    ids = []
    for _ in range(3):
        [event_id] = steps.send("t/list")
        ids.append(steps.runs_for_event(event_id)[0].id)
        steps.clock.advance(1)  # type: ignore[attr-defined]

    assert [r.id for r in steps.list_runs(function_id="lister")] == ids[::-1]
    assert [r.id for r in steps.list_runs(status="completed", limit=2)] == ids[::-1][:2]
    assert steps.list_runs(function_id="lister", status="failed") == []


def test_cancel_a_queued_run_stops_it_before_any_step(steps: CelerySteps) -> None:
    ran: list[str] = []

    @steps.function(id="slowpoke", trigger="t/slow", retries=1)
    def slowpoke(ctx: Context) -> None:
        ctx.step.run("first", lambda: ran.append("first"))
        ctx.step.run("second", lambda: 1 / 0)  # retrying: the run waits in "queued"

    run_id = steps.runs_for_event(steps.send("t/slow")[0])[0].id
    assert steps.get_run(run_id).status == "queued"
    steps.cancel(run_id)
    run = settle(steps, run_id)

    assert run.status == "cancelled"
    assert ran == ["first"]
    assert run.ended_at is not None
    with pytest.raises(RunNotFound):
        steps.cancel("unknown-run")


def test_fn_invoke_starts_a_run_directly(steps: CelerySteps) -> None:
    @steps.function(id="direct", trigger="t/never")
    def direct(ctx: Context) -> int:
        return int(ctx.event.data["n"]) * 2

    run_id = direct.invoke({"n": 21})

    assert settle(steps, run_id).output == 42


def test_an_idempotency_key_allows_one_run_per_key_value(steps: CelerySteps) -> None:
    @steps.function(id="welcome", trigger="user/signed_up", idempotency="event.data.user_id")
    def welcome(ctx: Context) -> None:
        return None

    steps.send("user/signed_up", data={"user_id": 1})
    steps.send("user/signed_up", data={"user_id": 1})  # a different event id, same user
    steps.send("user/signed_up", data={"user_id": 2})

    assert len(steps.list_runs(function_id="welcome")) == 2


def test_an_event_whose_routing_message_was_lost_is_routed_by_the_sweep(
    steps: CelerySteps, monkeypatch: pytest.MonkeyPatch
) -> None:
    @steps.function(id="swept", trigger="t/swept")
    def swept(ctx: Context) -> str:
        return "routed"

    # given the broker refuses the routing message once the event is stored
    original = steps.app.tasks["celery_steps.route"].apply_async
    monkeypatch.setattr(steps.app.tasks["celery_steps.route"], "apply_async",
                        lambda *a, **k: (_ for _ in ()).throw(ConnectionError("broker down")))
    [event_id] = steps.send("t/swept")
    assert steps.runs_for_event(event_id, timeout=0.05) == []

    # when the broker is back and the sweep delay has passed
    monkeypatch.setattr(steps.app.tasks["celery_steps.route"], "apply_async", original)
    steps.clock.advance(steps.settings.route_sweep_after)  # type: ignore[attr-defined]
    from celery_steps.runtime.timers import poll_once

    poll_once(steps.runtime)

    # then the event is routed once and its run completes
    [run] = steps.runs_for_event(event_id)
    assert run.output == "routed"


def test_get_event_shows_the_payload_and_the_runs_it_started(steps: CelerySteps) -> None:
    @steps.function(id="seen-a", trigger="t/seen")
    def seen_a(ctx: Context) -> None:
        return None

    @steps.function(id="seen-b", trigger="t/seen")
    def seen_b(ctx: Context) -> None:
        return None

    # given an event that started two runs
    [event_id] = steps.send("t/seen", data={"order_id": 7})
    started = {r.id for r in steps.runs_for_event(event_id)}

    # when it is inspected
    info = steps.get_event(event_id)

    # then its payload, arrival and runs are there
    assert info.event.name == "t/seen" and info.event.data == {"order_id": 7}
    assert info.routed is True
    assert set(info.run_ids) == started and len(started) == 2
    assert info.received_at.timestamp() * 1000 == pytest.approx(steps.clock.now_ms(), abs=1)


def test_get_event_of_an_unknown_id_is_an_event_not_found_error(steps: CelerySteps) -> None:
    with pytest.raises(EventNotFound, match="no event with id 'nope'"):
        steps.get_event("nope")


def test_list_runs_pages_with_before_the_last_run_of_the_previous_page(
    steps: CelerySteps,
) -> None:
    @steps.function(id="paged", trigger="t/paged")
    def paged(ctx: Context) -> None:
        return None

    # given five runs
    for _ in range(5):
        steps.send("t/paged")
        steps.clock.advance(0.001)  # type: ignore[attr-defined]
    everything = [r.id for r in steps.list_runs(function_id="paged")]

    # when listing two at a time
    first = steps.list_runs(function_id="paged", limit=2)
    second = steps.list_runs(function_id="paged", limit=2, before=first[-1].id)
    third = steps.list_runs(function_id="paged", limit=2, before=second[-1].id)

    # then the pages follow each other, newest first
    assert [r.id for r in first + second + third] == everything and len(everything) == 5
    with pytest.raises(RunNotFound):
        steps.list_runs(before="run_gone")


def test_a_message_for_one_function_carrying_anothers_run_executes_nothing(
    steps: CelerySteps,
) -> None:
    calls: list[str] = []

    @steps.function(id="fn-a", trigger="t/a")
    def fn_a(ctx: Context) -> str:
        calls.append("a")
        return "a's output"

    @steps.function(id="fn-b", trigger="t/b")
    def fn_b(ctx: Context) -> str:
        ctx.step.sleep("nap", "1h")
        return "b's output"

    # given a sleeping run of function B
    [run] = steps.runs_for_event(steps.send("t/b")[0])
    before = steps.get_run(run.id)

    # when a forged message to function A's task carries B's run id
    outcome = steps.app.tasks["celery_steps.fn.fn-a"].apply(args=[run.id]).get()

    # then A's handler did not run and B's run is unchanged
    assert outcome == "foreign" and calls == []
    assert steps.get_run(run.id) == before
