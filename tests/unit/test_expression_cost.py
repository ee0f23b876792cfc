"""CEL evaluation cost: bounded before evaluating, refused cleanly when over the budget."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest

from celery_steps.errors import ConfigurationError
from celery_steps.expression_cost import mask_strings, profile
from celery_steps.expressions import (
    MAX_COMPREHENSION_NESTING,
    MAX_EVALUATION_COST,
    Expression,
    ExpressionCostError,
    ExpressionEvalError,
)

ALL_UNIQUE = "event.data.items.all(x, event.data.items.exists_one(y, y == x))"


def items_event(count: int) -> dict[str, Any]:
    return {"name": "t/items", "data": {"items": list(range(count))}}


@pytest.mark.parametrize(
    ("source", "nesting", "by_length", "by_values"),
    [
        ("event.data.amount > 100", 0, 0, 0),
        ("event.data.kind in event.data.allowed", 0, 0, 0),
        ("event.data.items.all(x, x > 0)", 1, 1, 1),
        ("event.data.items . exists (x, x > 0)", 1, 1, 1),
        ("event.data.a.exists(x, x == 1) && event.data.b.all(y, y == 2)", 1, 1, 1),
        (ALL_UNIQUE, 2, 2, 2),
        ("event.data.items.filter(i, i.qty > 10).size() > 2", 1, 2, 2),
        ("event.data.items.map(i, i.qty).size() > 2", 1, 2, 2),
        ("event.data.a.all(x, x in event.data.b)", 1, 2, 2),
        ("event.data.a.all(x, x.kind in ['a', 'b'])", 1, 1, 1),
        ("event.data.a.all(x, 'admin' in x.roles)", 1, 2, 1),
        ("event.data.orders.all(o, o.lines.all(l, l.tags.exists(t, t == 'x')))", 3, 3, 1),
        ("event.data.orders.all(o, o['lines'][0].all(l, l > 0))", 2, 2, 1),
        ("event.data.orders.all(o, o.lines.all(l, o.lines.exists(m, m == l)))", 3, 3, 2),
        ("event.data.a.filter(x, x > 1).all(y, y.all(z, z > 0))", 2, 2, 2),
        ("event.data.a.map(x, event.data.b).all(l, l.all(y, y > 0))", 2, 2, 2),
        ("event.data.items.all(x, '.all(y, z.exists(w, w))' != x)", 1, 1, 1),
    ],
)
def test_the_profile_reads_comprehension_nesting_and_cost_degrees(
    source: str, nesting: int, by_length: int, by_values: int
) -> None:
    found = profile(source)
    assert (found.nesting, found.length_degree, found.values_degree) == (
        nesting, by_length, by_values)


def test_masking_blanks_string_contents_and_keeps_positions() -> None:
    source = "a + \"x.all(y)\" + '''q\"''' + r\"\\\\\""
    masked = mask_strings(source)
    assert len(masked) == len(source)
    assert "all" not in masked and "q" not in masked and masked.startswith("a + \"")


def test_the_46_kb_all_unique_condition_is_refused_in_well_under_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    event = items_event(9_400)
    assert 45_000 < len(json.dumps(event, separators=(",", ":"))) < 47_000
    expr = Expression(ALL_UNIQUE, what="trigger condition")

    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="celery_steps.expressions"):
        matched = expr.matches(event=event)
    elapsed = time.perf_counter() - started

    assert matched is False
    assert elapsed < 0.5  # unbounded, this took 35-48 s
    [record] = caplog.records
    assert "trigger condition" in record.getMessage() and "was not evaluated" in record.message


def test_the_refusal_names_the_expression_and_the_budget() -> None:
    with pytest.raises(ExpressionCostError) as refused:
        Expression(ALL_UNIQUE).evaluate(event=items_event(5_000))

    message = str(refused.value)
    assert ALL_UNIQUE in message
    assert f"{MAX_EVALUATION_COST:,}" in message and "MAX_EVALUATION_COST" in message
    assert isinstance(refused.value, ExpressionEvalError)  # handled like any failed evaluation


def test_a_refused_key_expression_gives_no_key() -> None:
    expr = Expression("event.data.items.filter(x, x > 0).size()")
    assert expr.key(event=items_event(10)) == "9"
    assert expr.key(event=items_event(50_000)) is None


def test_the_same_expression_over_a_small_input_is_evaluated() -> None:
    expr = Expression(ALL_UNIQUE)
    assert expr.matches(event=items_event(50)) is True
    assert expr.matches(event={"data": {"items": [1, 2, 1]}}) is False


def test_nested_parts_of_a_large_event_are_not_mistaken_for_a_cross_product() -> None:
    orders = [{"lines": [{"tags": ["a", "b"]} for _ in range(10)]} for _ in range(2_000)]
    expr = Expression("event.data.orders.all(o, o.lines.all(l, l.tags.exists(t, t == 'a')))")

    assert expr.matches(event={"data": {"orders": orders}}) is True


def test_one_long_list_and_many_small_values_are_both_needed_to_refuse() -> None:
    expr = Expression("event.data.items.filter(x, x > 0).size() > 0")
    many_values = {"data": {"items": [1, 2, 3],
                            "rows": [[{"k": i} for i in range(100)] for _ in range(50)]}}

    assert expr.matches(event=many_values) is True


def test_comprehensions_nested_beyond_the_maximum_are_refused_at_declaration() -> None:
    source = "event.data.a.all(w, w.all(x, x.all(y, y.all(z, z > 0))))"
    with pytest.raises(ConfigurationError, match=f"more than the limit of "
                                                 f"{MAX_COMPREHENSION_NESTING}"):
        Expression(source, what="trigger condition")


def test_a_simple_condition_skips_the_cost_check() -> None:
    expr = Expression("event.data.amount > 100")
    assert expr._budget is None
    huge = {"data": {"amount": 150, "blob": list(range(500_000))}}
    assert expr.matches(event=huge) is True
