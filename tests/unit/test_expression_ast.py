"""The shape of a CEL condition: what it reads of ``event``, which equalities it requires."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from celery_steps.expression_ast import Unparsed, parse, prune, shape
from celery_steps.expressions import Expression, ExpressionEvalError

TRIGGERS: list[dict[str, Any]] = [
    {"name": "t/start", "id": "e1", "data": {"order": 7, "min": 10, "tags": ["a", "b"],
                                           "user": {"tier": "gold", "id": 3}, "note": "x"}},
    {"name": "t/start", "id": "e2", "data": {"order": "7", "user": "not a map", "tags": []}},
    {"name": "t/start", "id": "e3", "data": {}},
    {"name": "t/start", "id": "e4"},
]
INCOMING: list[dict[str, Any]] = [
    {"name": "t/answer", "data": {"order": 7, "amount": 12, "tier": "gold", "tag": "a"}},
    {"name": "t/answer", "data": {"order": 7.0, "amount": 3, "tier": "silver", "tag": "z"}},
    {"name": "t/answer", "data": {"order": "7"}},
    {"name": "t/answer", "data": {}},
]
CONDITIONS = [
    "async.data.order == event.data.order",
    "event.data.order == async.data.order && async.data.amount >= event.data.min",
    "async.data.amount >= event.data.min",
    "has(event.data.user.tier) && event.data.user.tier == async.data.tier",
    "!has(event.data.user.tier) || event.data.user.tier == async.data.tier",
    "!has(event.data.missing)",
    "has(event.data.missing.deeper)",
    "async.data.tag in event.data.tags",
    "event.data.tags.exists(t, t == async.data.tag)",
    "size(event.data) > 2",
    "event.data['order'] == async.data.order",
    "'order' in event.data",
    "event.data.user.id + 1 == 4 ? async.data.tier == 'gold' : false",
    "event == async",
    "event.name == 'x' || event.id == 'e1'",
    "[event.data.order, event.data.note].size() == 2",
    "{'k': event.data.note}.k == 'x'",
    "event.data.user.tier.startsWith('g') // a comment after the code",
    "cel.bind(u, event.data.user, u.id == 3)",
    "event.data.tags.map(t, t + '!').size() > 1 && event.data.note == \"x\"",
    "r'\\d' != event.data.note && '''multi\nline''' != event.data.note",
    "-event.data.min < 0 && !(event.data.min > 100) && 0x10u > 1u && 1.5e1 > .5",
]


def outcome(source: str, trigger: dict[str, Any], incoming: dict[str, Any]) -> Any:
    expr = Expression(source, variables=("event", "async"))
    try:
        return ("value", expr.evaluate(event=trigger, async_=incoming))
    except ExpressionEvalError:
        return ("error",)


@pytest.mark.parametrize("source", CONDITIONS)
def test_a_condition_over_pruned_events_evaluates_as_over_the_whole_events(
    source: str,
) -> None:
    # given the paths a condition reads of ``event`` and of ``async``
    found = shape(source)
    assert found.event_reads is not None and found.async_reads is not None, source
    for trigger, incoming in itertools.product(TRIGGERS, INCOMING):
        kept = prune(trigger, found.event_reads)
        seen = prune(incoming, found.async_reads)
        # then the pruned copies give the same value, or the same failure, as the whole
        assert outcome(source, kept, seen) == outcome(source, trigger, incoming), (
            trigger, incoming, kept, seen)
        assert outcome(source, kept, incoming) == outcome(source, trigger, incoming)


def test_only_the_paths_read_are_kept() -> None:
    # given a condition reading two fields of a larger trigger
    source = "async.data.amount >= event.data.min && event.data.user.tier == 'gold'"
    # when the trigger is pruned to what it reads
    kept = prune(TRIGGERS[0], shape(source).event_reads or ())
    # then the rest is gone
    assert kept == {"data": {"min": 10, "user": {"tier": "gold"}}}


def test_a_path_through_a_non_map_keeps_that_value_so_reading_it_still_fails() -> None:
    assert prune({"data": {"user": "x", "n": 1}}, (("data", "user", "tier"),)) == {
        "data": {"user": "x"}}


def test_a_missing_field_stays_missing_and_its_parent_map_is_kept() -> None:
    assert prune({"data": {"n": 1}}, (("data", "coupon"),)) == {"data": {}}
    assert prune({"name": "x"}, (("data", "coupon"),)) == {}


def test_reading_the_whole_event_keeps_it_all() -> None:
    assert shape("event == async").event_reads == ((),)
    assert prune(TRIGGERS[0], ((),)) == TRIGGERS[0]


def test_a_path_read_whole_covers_the_longer_paths_under_it() -> None:
    assert shape("size(event.data) > 0 && event.data.n == 1").event_reads == (("data",),)


def test_a_condition_that_reads_no_event_keeps_nothing() -> None:
    assert shape("async.data.n > 2").event_reads == ()


def test_what_a_condition_reads_of_async_is_found_like_what_it_reads_of_event() -> None:
    found = shape("async.data.n == event.data.n && has(async.user.id) && size(async.data) > 1")
    assert found.async_reads == (("data",), ("user", "id"))
    assert found.event_reads == (("data", "n"),)


@pytest.mark.parametrize(
    ("source", "equalities"),
    [
        ("async.data.order == event.data.order", [("data.order", "data.order")]),
        ("event.data.id == async.data.order_id", [("data.order_id", "data.id")]),
        ("(async.a.b == event.c) && async.x > 1 && event.y == async.z",
         [("a.b", "c"), ("z", "y")]),
        ("async.data.amount > 1 && (event.data.k == async.data.k && true)",
         [("data.k", "data.k")]),
        ("async.data.order == event.data.order || async.data.vip", []),
        ("!(async.data.order == event.data.order)", []),
        ("async.data.order == event.data.order ? true : false", []),
        ("async.data.order != event.data.order", []),
        ("async.data.order == event.data.order == true", []),
        ("async.data['order'] == event.data.order", []),
        ("async == event", []),
        ("async.data.order == async.data.other", []),
        ("event.data.a == event.data.b", []),
        ("async.data.items.exists(i, i.id == event.data.id)", []),
    ],
)
def test_only_top_level_conjuncts_comparing_an_async_path_to_an_event_path_are_equalities(
    source: str, equalities: list[tuple[str, str]],
) -> None:
    found = [(".".join(a), ".".join(e)) for a, e in shape(source).equalities]
    assert found == equalities


@pytest.mark.parametrize(
    "source",
    ["event.?data.n == 1", "[?event.data.n]", "{?'a': event.data.n}",
     "google.protobuf.Value{}", "event.data.n ==", "'unterminated", "event.data.n @ 1",
     "!" * 3000 + "true"],
    ids=["optional-select", "optional-list", "optional-map", "message", "truncated",
         "string", "character", "too-deep"],
)
def test_what_the_parser_does_not_model_is_reported_and_read_as_the_whole_event(
    source: str,
) -> None:
    with pytest.raises(Unparsed):
        parse(source)
    found = shape(source)
    assert found.event_reads is None and found.async_reads is None
    assert found.equalities == ()


def test_operators_bind_as_in_the_cel_grammar() -> None:
    tree = parse("a || b && c == d + e * -f.g")
    assert tree.name == "_||_"
    conj = tree.args[1]
    assert conj.name == "_&&_"
    eq = conj.args[1]
    assert eq.name == "_==_"
    add = eq.args[1]
    assert add.name == "_+_"
    mul = add.args[1]
    assert mul.name == "_*_"
    neg = mul.args[1]
    assert (neg.name, neg.args[0].kind, neg.args[0].name) == ("-_", "select", "g")
