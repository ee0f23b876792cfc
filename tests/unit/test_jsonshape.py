"""Measuring JSON-like values without recursion: nesting depth and value counts."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from celery_steps.errors import ConfigurationError
from celery_steps.jsonshape import DEFAULT_MAX_DEPTH, count_values, nesting_depth, too_deep
from celery_steps.settings import MAX_JSON_DEPTH_SETTING, Settings


def deep_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "depth"),
    [
        (1, 0), ("text", 0), (None, 0), ([], 1), ({}, 1), ([1, "a"], 1),
        ({"a": [1]}, 2), ({"a": {"b": {}}, "c": 1}, 3), ((1, (2,)), 2),
        ([[], [[[]]], []], 4),
    ],
)
def test_nesting_depth_counts_containers(value: Any, depth: int) -> None:
    assert nesting_depth(value) == depth


def test_a_value_nested_far_past_the_recursion_limit_is_measured() -> None:
    assert nesting_depth(deep_list(100_000)) == 100_000


def test_with_a_limit_the_walk_stops_just_past_it() -> None:
    assert nesting_depth(deep_list(100_000), limit=64) == 65
    assert nesting_depth(deep_list(64), limit=64) == 64


def test_expand_measures_objects_such_as_models() -> None:
    class Inner(BaseModel):
        items: list[list[int]]

    def dump(value: Any) -> Any:
        return value.model_dump() if isinstance(value, BaseModel) else value

    assert nesting_depth({"m": Inner(items=[[1]])}) == 1  # a leaf without expand
    assert nesting_depth({"m": Inner(items=[[1]])}, expand=dump) == 4
    assert nesting_depth(Inner(items=[]), expand=dump) == 2


def test_count_values_counts_containers_and_scalars_not_keys() -> None:
    assert count_values([]) == 0
    assert count_values([{"a": 1, "b": [2, 3]}]) == 5  # dict, 1, list, 2, 3
    assert count_values([1, "x"]) == 2


def test_count_values_stops_just_past_its_limit() -> None:
    assert count_values([list(range(1_000_000))], limit=10) == 11


def test_the_message_names_the_limit_and_the_setting() -> None:
    message = too_deep("the result of step 'a'", 64)
    assert "the result of step 'a'" in message
    assert "more than 64 levels" in message
    assert "steps_json_max_depth" in message


def test_the_depth_setting_defaults_to_the_documented_limit() -> None:
    assert Settings().json_max_depth == DEFAULT_MAX_DEPTH == 64


@pytest.mark.parametrize("bad", [0, -1, MAX_JSON_DEPTH_SETTING + 1, 10.5, True, "64"])
def test_a_bad_depth_setting_is_refused(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="steps_json_max_depth"):
        Settings.from_conf({}, json_max_depth=bad)
