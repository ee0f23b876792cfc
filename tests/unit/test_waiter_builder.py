"""Building a waiter: what it keeps of the trigger, and when its if_exp becomes an index."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import pytest

from celery_steps.engine import waiters as waiters_module
from celery_steps.engine.waiters import WAITER_TRIGGER_MAX_BYTES, build_waiter, indexable
from celery_steps.expressions import Expression, match_key

TRIGGER: dict[str, Any] = {
    "name": "shop/cart.created", "id": "evt-1", "ts": 1,
    "data": {"cart": "c-1", "order": 7, "minimum": 10, "lines": [{"sku": "a"}] * 3},
    "user": {"email": "ada@example.com"},
}

VALUES: list[Any] = [
    7, 7.0, 7.5, "7", True, False, 1, 0, -0.0, None, "", "é", 2**53 - 1, 2**53, 2**53 + 1,
    float(2**53), float(2**53 - 1), 2**63, 2**64, 1e300, float("inf"), float("nan"), [7],
    [7.0], {"a": 7}, {"a": 7.0},
]


def build(condition: str | None, *, match: str | None = None,
          trigger: dict[str, Any] | None = None, final: bool = True) -> Any:
    return build_waiter("shop/order.paid", "run-1", "fn", "wait", trigger or TRIGGER,
                        match=match, condition=condition, trigger_final=final)


def test_every_value_cel_finds_equal_to_an_indexable_value_has_its_match_key() -> None:
    # given CEL's equality between the incoming event's field and the trigger's
    equal = Expression("async.x == event.y", variables=("event", "async"))
    checked = 0
    for stored, incoming in itertools.product(VALUES, VALUES):
        if not indexable(stored):
            continue
        # then whenever CEL says equal, the index (match keys) says so too
        if equal.matches(event={"y": stored}, async_={"x": incoming}):
            checked += 1
            assert match_key(incoming) == match_key(stored), (stored, incoming)
    assert checked > 10


def test_values_cel_compares_loosely_past_two_to_the_53_are_not_indexed() -> None:
    # CEL finds these equal while their keys differ: an index would miss the event
    equal = Expression("async.x == event.y", variables=("event", "async"))
    assert equal.matches(event={"y": float(2**53)}, async_={"x": 2**53 + 1})
    assert match_key(float(2**53)) != match_key(2**53 + 1)
    assert not indexable(float(2**53))
    assert not indexable(2**53)
    assert indexable(2**53 - 1)
    assert not indexable([7]) and not indexable({"a": 7}) and not indexable(float("nan"))


def test_an_if_exp_equality_without_match_becomes_the_waiters_index() -> None:
    w = build("async.data.cart_id == event.data.cart && async.data.total > 5")
    assert (w.match_path, w.match_key) == ("data.cart_id", match_key("c-1"))
    assert w.condition == "async.data.cart_id == event.data.cart && async.data.total > 5"
    assert w.trigger == {"data": {"cart": "c-1"}}


def test_an_explicit_match_keeps_the_index_and_the_if_exp_is_only_evaluated() -> None:
    w = build("async.data.cart_id == event.data.cart", match="data.order")
    assert (w.match_path, w.match_key) == ("data.order", match_key(7))
    assert w.trigger == {"data": {"cart": "c-1"}}


def test_an_equality_on_a_field_the_trigger_lacks_is_indexed_on_nothing() -> None:
    # the conjunct can never be true: keyed on None, no event ever finds the waiter
    w = build("async.data.cart_id == event.data.missing")
    assert (w.match_path, w.match_key) == ("data.cart_id", None)


def test_an_equality_on_a_value_that_is_not_indexable_leaves_the_waiter_unindexed() -> None:
    w = build("async.data.lines == event.data.lines && async.data.n == event.data.order")
    assert (w.match_path, w.match_key) == ("data.n", match_key(7))  # the next conjunct
    w = build("async.data.lines == event.data.lines")
    assert (w.match_path, w.match_key) == (None, None)
    assert w.trigger == {"data": {"lines": TRIGGER["data"]["lines"]}}


def test_a_condition_without_a_required_equality_is_not_indexed_but_keeps_its_parts() -> None:
    w = build("async.data.total >= event.data.minimum || async.data.vip")
    assert (w.match_path, w.match_key) == (None, None)
    assert w.trigger == {"data": {"minimum": 10}}


def test_a_waiter_without_condition_keeps_nothing() -> None:
    w = build(None, match="data.order")
    assert w.trigger is None
    assert (w.match_path, w.match_key) == ("data.order", match_key(7))


def test_the_kept_parts_are_a_copy() -> None:
    trigger = {"data": {"tags": ["a"]}}
    w = build("async.data.tag in event.data.tags", trigger=trigger)
    trigger["data"]["tags"].append("b")
    assert w.trigger == {"data": {"tags": ["a"]}}


def test_a_trigger_that_may_still_change_is_neither_kept_nor_indexed() -> None:
    # a debounced run's trigger is its latest event until it starts
    w = build("async.data.cart_id == event.data.cart", final=False)
    assert w.trigger is None
    assert (w.match_path, w.match_key) == (None, None)


def test_an_oversized_part_is_not_kept_and_a_warning_says_so_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(waiters_module, "_warned", set())
    big = {"data": {"blob": "x" * WAITER_TRIGGER_MAX_BYTES, "cart": "c-9"}}
    condition = "async.data.blob == event.data.blob || async.data.cart_id == event.data.cart"
    with caplog.at_level(logging.WARNING, logger="celery_steps.waiters"):
        first = build(condition, trigger=big)
        second = build(condition, trigger=big)
    # then routing will load the run for it, as before waiters kept anything
    assert first.trigger is None and second.trigger is None
    [record] = caplog.records
    assert "more than the 4096 kept with a waiter" in record.getMessage()
    assert "'fn'" in record.getMessage()


def test_an_oversized_part_is_still_indexed() -> None:
    big = {"data": {"blob": "x" * WAITER_TRIGGER_MAX_BYTES, "cart": "c-9"}}
    w = build("async.data.cart_id == event.data.cart && size(event.data.blob) > 1", trigger=big)
    assert w.trigger is None
    assert (w.match_path, w.match_key) == ("data.cart_id", match_key("c-9"))


def test_a_condition_the_parser_cannot_read_keeps_the_whole_trigger() -> None:
    w = build("event.?data.cart.orValue('') == async.data.cart_id")
    assert w.trigger == TRIGGER
    assert w.match_path is None
