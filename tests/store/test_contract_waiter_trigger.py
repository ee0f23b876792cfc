"""StateStore contract: the trigger parts a waiter keeps come back with it. Every store."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from celery_steps.store.base import Suspension
from tests.store._support import EVENT, leased, unstamped, waiter


@pytest.mark.parametrize(
    "trigger",
    [{}, {"data": {"order": 7, "user": {"tier": "gold"}, "tags": ["é", None, 1.5]}}, None],
    ids=["nothing-read", "nested", "not-kept"],
)
def test_find_waiters_returns_the_trigger_parts_a_waiter_was_registered_with(
    store: Any, trigger: dict[str, Any] | None,
) -> None:
    # given a waiter registered with the parts of its run's trigger its condition reads
    run_id, token = leased(store)
    w = replace(waiter(run_id), condition="async.data.order == event.data.order",
                trigger=trigger)
    assert store.suspend(run_id, token, Suspension("waiting", None, waiters=(w,))) is False

    # then an event finds it with those parts (None stays None: an older version's waiter)
    [found] = unstamped(store.find_waiters(EVENT, {"data": {"order": 7}}))
    assert found == w
    assert found.trigger == trigger


def test_a_waiter_indexed_by_its_if_exp_is_found_only_by_the_value_it_was_keyed_on(
    store: Any,
) -> None:
    # given a waiter indexed under the async path of its if_exp's equality
    run_id, token = leased(store)
    w = replace(waiter(run_id, path="data.order_id", value="o-1"),
                condition="async.data.order_id == event.data.id", trigger={"data": {"id": "o-1"}})
    store.begin_wait(run_id, token, "wait", {"op": "wait_for_event", "pos": 0,
                                             "status": "waiting"}, (w,))

    assert unstamped(store.find_waiters(EVENT, {"data": {"order_id": "o-2"}})) == []
    assert unstamped(store.find_waiters(EVENT, {"data": {}})) == []
    assert unstamped(store.find_waiters(EVENT, {"data": {"order_id": "o-1"}})) == [w]
