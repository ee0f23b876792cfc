from __future__ import annotations

from typing import Any

import pytest

from celery_steps.errors import CeleryStepsError, ConfigurationError
from celery_steps.expressions import (
    MAX_EXPRESSION_LENGTH,
    MAX_NESTING,
    MISSING,
    Expression,
    ExpressionEvalError,
    lookup_path,
    match_key,
    match_to_expression,
)

EVENT: dict[str, Any] = {
    "name": "shop/order.paid",
    "data": {"order_id": 7, "amount": 150, "tags": ["vip"], "user": {"tier": "gold"}},
}


def test_condition_matches_when_true() -> None:
    expr = Expression("event.data.amount > 100")
    assert expr.matches(event=EVENT) is True


def test_condition_does_not_match_when_false() -> None:
    assert Expression("event.data.amount > 1000").matches(event=EVENT) is False


def test_source_and_variables_are_kept() -> None:
    expr = Expression("event.data.amount > 1", variables=("event", "async"))
    assert expr.source == "event.data.amount > 1"
    assert expr.variables == ("event", "async")


def test_async_variable_works_in_expressions() -> None:
    expr = Expression("event.data.order_id == async.data.order_id", variables=("event", "async"))
    assert expr.matches(event=EVENT, **{"async": {"data": {"order_id": 7}}})
    assert not expr.matches(event=EVENT, **{"async": {"data": {"order_id": 8}}})


def test_async_underscore_alias_is_accepted() -> None:
    expr = Expression("event.data.order_id == async.data.order_id", variables=("event", "async"))
    assert expr.matches(event=EVENT, async_={"data": {"order_id": 7}})


def test_macros_and_string_functions_work() -> None:
    expr = Expression(
        "event.data.tags.exists(t, t == 'vip') && event.name.startsWith('shop/') "
        "&& has(event.data.user) && !has(event.data.missing)"
    )
    assert expr.matches(event=EVENT)


def test_type_names_are_not_unknown_variables() -> None:
    assert Expression("type(event.data.amount) == int").matches(event=EVENT)


def test_missing_field_is_an_eval_error_and_does_not_match() -> None:
    expr = Expression("event.data.nope == 1")
    with pytest.raises(ExpressionEvalError, match="nope"):
        expr.evaluate(event=EVENT)
    assert expr.matches(event=EVENT) is False


def test_type_error_is_an_eval_error_and_does_not_match() -> None:
    expr = Expression("event.data.user.tier + 1 == 2")
    with pytest.raises(ExpressionEvalError, match="TypeError"):
        expr.evaluate(event=EVENT)
    assert expr.matches(event=EVENT) is False


def test_division_by_zero_is_an_eval_error() -> None:
    with pytest.raises(ExpressionEvalError):
        Expression("event.data.amount / 0 == 1").evaluate(event=EVENT)


def test_undefined_variable_at_evaluation_is_an_eval_error() -> None:
    expr = Expression("event.data.amount > 1")
    with pytest.raises(ExpressionEvalError):
        expr.evaluate()


def test_unconvertible_value_is_an_eval_error() -> None:
    with pytest.raises(ExpressionEvalError):
        Expression("event.data.x == 1").evaluate(event={"data": {"x": object()}})


def test_eval_error_is_a_celery_steps_error() -> None:
    assert issubclass(ExpressionEvalError, CeleryStepsError)


def test_non_bool_result_does_not_match() -> None:
    assert Expression("event.data.amount").matches(event=EVENT) is False
    assert Expression("1").matches(event=EVENT) is False


def test_evaluate_returns_the_value() -> None:
    assert Expression("event.data.amount * 2").evaluate(event=EVENT) == 300


def test_key_returns_strings_as_they_are() -> None:
    assert Expression("event.data.user.tier").key(event=EVENT) == "gold"


def test_key_returns_compact_sorted_json_for_other_values() -> None:
    assert Expression("event.data.order_id").key(event=EVENT) == "7"
    assert Expression("event.data.tags").key(event=EVENT) == '["vip"]'
    assert Expression("{'b': 1, 'a': [true, null]}").key(event=EVENT) == '{"a":[true,null],"b":1}'


def test_key_is_none_when_evaluation_fails() -> None:
    assert Expression("event.data.nope").key(event=EVENT) is None


def test_invalid_syntax_is_a_configuration_error_naming_the_option() -> None:
    with pytest.raises(ConfigurationError) as info:
        Expression("event.data.x ==", what="if_exp")
    message = str(info.value)
    assert message.startswith("invalid if_exp 'event.data.x ==': ")
    assert "Syntax error" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "source",
    ["event.data.x == 'unterminated", "(event.data.x", "event..data", "1 +", "event.data.x = 1"],
)
def test_bad_cel_is_rejected(source: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid expression"):
        Expression(source)


@pytest.mark.parametrize("source", ["", "   "])
def test_empty_expression_is_rejected(source: str) -> None:
    with pytest.raises(ConfigurationError, match="empty"):
        Expression(source)


@pytest.mark.parametrize("source", [None, 5, b"event"])
def test_non_string_expression_is_rejected(source: Any) -> None:
    with pytest.raises(ConfigurationError, match="expected a CEL expression string"):
        Expression(source)


def test_too_long_expression_is_rejected() -> None:
    source = "event.data.amount > 1" + " " * MAX_EXPRESSION_LENGTH
    with pytest.raises(ConfigurationError, match="limit of 2048"):
        Expression(source)


def test_expression_at_the_length_limit_is_accepted() -> None:
    source = "true" + " " * (MAX_EXPRESSION_LENGTH - 4)
    assert Expression(source).matches(event=EVENT)


def test_too_deep_nesting_is_rejected() -> None:
    depth = MAX_NESTING + 1
    with pytest.raises(ConfigurationError, match="nest 33 deep"):
        Expression("(" * depth + "true" + ")" * depth)


def test_mixed_brackets_count_towards_nesting() -> None:
    source = "[{'a': (" * 11 + "1" + ")}]" * 11
    with pytest.raises(ConfigurationError, match="nest 33 deep"):
        Expression(source)


def test_nesting_at_the_limit_is_accepted() -> None:
    assert Expression("(" * MAX_NESTING + "true" + ")" * MAX_NESTING).matches(event=EVENT)


def test_brackets_inside_string_literals_do_not_count() -> None:
    brackets = "(" * 100
    source = f"event.name != '{brackets}' && event.name != \"{brackets}\" && '\\'(' != ''"
    assert Expression(source).matches(event=EVENT)


def test_unknown_variable_is_rejected_at_declaration() -> None:
    with pytest.raises(ConfigurationError, match="unknown variable 'evnt'"):
        Expression("evnt.data.amount > 1", what="if_exp of function 'f'")


def test_async_is_unknown_where_only_event_is_available() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown variable 'async'.*can use event"):
        Expression("event.data.id == async.data.id")


def test_match_to_expression_compares_both_events() -> None:
    assert match_to_expression("data.order_id") == "event.data.order_id == async.data.order_id"
    expr = Expression(match_to_expression("data.order_id"), variables=("event", "async"))
    assert expr.matches(event=EVENT, **{"async": {"data": {"order_id": 7}}})


@pytest.mark.parametrize(
    "match",
    ["", "data..id", "data.order-id", "data.1x", "data.id ", "data.id == 1", ".data", "data.id."],
)
def test_match_with_bad_path_is_rejected(match: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid match"):
        match_to_expression(match)


def test_match_with_event_prefix_is_rejected_with_a_hint() -> None:
    with pytest.raises(ConfigurationError, match="drop the 'event' prefix"):
        match_to_expression("event.data.order_id")


def test_match_with_reserved_word_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="reserved word"):
        match_to_expression("data.in")


def test_non_string_match_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="invalid match"):
        match_to_expression(7)  # type: ignore[arg-type]


def test_lookup_path_finds_nested_values() -> None:
    assert lookup_path(EVENT, "data.order_id") == 7
    assert lookup_path(EVENT, "data.user.tier") == "gold"
    assert lookup_path({"data": {"x": None}}, "data.x") is None


def test_lookup_path_returns_missing_when_absent() -> None:
    assert lookup_path(EVENT, "data.nope") is MISSING
    assert lookup_path(EVENT, "data.order_id.deeper") is MISSING
    assert lookup_path(EVENT, "data.tags.0") is MISSING
    assert lookup_path({}, "data") is MISSING


def test_match_key_distinguishes_types() -> None:
    assert match_key(7) == "7"
    assert match_key("7") == '"7"'
    assert match_key(7) != match_key("7")
    assert match_key(True) == "true"


def test_match_key_is_canonical() -> None:
    assert match_key({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    assert match_key({"a": 1, "b": 2}) == match_key({"b": 2, "a": 1})


def test_match_key_treats_integral_floats_like_cel_equality() -> None:
    assert match_key(7.0) == match_key(7)
    assert match_key(7.5) == "7.5"
