"""A trigger condition over the evaluation budget is a failed evaluation: no run, a warning."""

from __future__ import annotations

import logging
import time

import pytest

from celery_steps import CelerySteps, Context, TriggerEvent

ALL_UNIQUE = "event.data.items.all(x, event.data.items.exists_one(y, y == x))"


def test_an_over_budget_trigger_condition_does_not_match_and_says_why(
    steps: CelerySteps, caplog: pytest.LogCaptureFixture
) -> None:
    @steps.function(id="unique-items", trigger=TriggerEvent("t/items", if_exp=ALL_UNIQUE))
    def unique_items(ctx: Context) -> int:
        return len(ctx.event.data["items"])

    [small] = steps.send("t/items", {"items": [1, 2, 3]})
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="celery_steps.expressions"):
        [big] = steps.send("t/items", {"items": list(range(9_400))})  # about 46 KB
    routed_in = time.perf_counter() - started

    assert [r.status for r in steps.runs_for_event(small)] == ["completed"]
    assert steps.runs_for_event(big) == []
    assert routed_in < 1.0
    assert any("was not evaluated" in r.getMessage() and "unique-items" in r.getMessage()
               and ALL_UNIQUE in r.getMessage() for r in caplog.records)
