"""Every flow-control option is validated when the function is declared: a bad value or a
refused combination raises ConfigurationError naming the function and the option, and
registers nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from celery_steps import (
    BatchEvents,
    CelerySteps,
    Concurrency,
    ConfigurationError,
    Debounce,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
)

BAD_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"debounce": Debounce("-2s")}, "debounce.period"),
    ({"debounce": Debounce("5 minutes")}, "debounce.period"),
    ({"debounce": Debounce("later")}, "debounce.period"),
    ({"debounce": Debounce(0)}, "debounce.period"),
    ({"debounce": Debounce("1m", timeout="0.5s")}, "debounce.timeout"),
    ({"debounce": Debounce("1m", timeout="soon")}, "debounce.timeout"),
    ({"debounce": Debounce("1m", key="event.(")}, "debounce.key"),
    ({"throttle": Throttle(1, "1m", burst=-1)}, "throttle.burst"),
    ({"throttle": Throttle(1, "1m", burst=0)}, "throttle.burst"),
    ({"throttle": Throttle(1, "1m", burst="2")}, "throttle.burst"),  # type: ignore[arg-type]
    ({"throttle": Throttle(1, "1m", burst=True)}, "throttle.burst"),
    ({"throttle": Throttle(1, 0)}, "throttle.period"),
    ({"throttle": Throttle(1, timedelta(milliseconds=999))}, "throttle.period"),
    ({"throttle": Throttle(0, "1m")}, "throttle.limit"),
    ({"throttle": Throttle(2, "1m", key="event.(")}, "throttle.key"),
    ({"rate_limit": RateLimit(1, 0)}, "rate_limit.period"),
    ({"rate_limit": RateLimit(1, "500ms")}, "rate_limit.period"),
    ({"rate_limit": RateLimit(1, "soon")}, "rate_limit.period"),
    ({"rate_limit": RateLimit(-1, "1m")}, "rate_limit.limit"),
    ({"batch_events": BatchEvents(3, 0)}, "batch_events.timeout"),
    ({"batch_events": BatchEvents(0, "1m")}, "batch_events.max_size"),
    ({"batch_events": BatchEvents(2.5, "1m")}, "batch_events.max_size"),  # type: ignore[arg-type]
    ({"concurrency": Concurrency(0)}, "concurrency.limit"),
    ({"concurrency": Concurrency("2")}, "concurrency.limit"),  # type: ignore[arg-type]
    ({"concurrency": Concurrency(1, scope="global")}, "concurrency.scope"),  # type: ignore[arg-type]
    ({"concurrency": Concurrency(1, scope="env")}, "concurrency has scope 'env' but no key"),
    ({"concurrency": Concurrency(1, key="event.(")}, "concurrency.key"),
    ({"concurrency": [Concurrency(1), Concurrency(2), Concurrency(3)]}, "concurrency"),
    ({"concurrency": []}, "concurrency"),
    ({"concurrency": [Concurrency(1), "2"]}, "concurrency[1]"),
    ({"concurrency": [Concurrency(1), Concurrency(0, key="event.data.u")]},
     "concurrency[1].limit"),
    ({"concurrency": [Concurrency(1, key="event.data.u"), Concurrency(3, key="event.data.u")]},
     "concurrency[1] repeats"),
    ({"concurrency": 3}, "concurrency must be a Concurrency"),
    ({"priority": Priority("event.(")}, "priority.run"),
    ({"priority": "event.data.p"}, "priority must be a Priority"),
    ({"singleton": Singleton(mode="queue")}, "singleton.mode"),  # type: ignore[arg-type]
    ({"throttle": RateLimit(1, "1m")}, "throttle must be a Throttle"),
]


@pytest.mark.parametrize(("options", "names"), BAD_OPTIONS)
def test_a_bad_option_is_refused_at_declaration_naming_function_and_option(
    steps: CelerySteps, options: dict[str, Any], names: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        steps.function(id="picky", trigger="t/x", **options)(lambda ctx: None)

    assert "'picky'" in str(raised.value)
    assert names in str(raised.value)
    assert "picky" not in steps.functions  # nothing registered


REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"debounce": Debounce("1m"), "batch_events": BatchEvents(3, "1m")},
     "debounce and batch_events"),
    ({"batch_events": BatchEvents(3, "1m"), "rate_limit": RateLimit(1, "1m")},
     "batch_events and rate_limit"),
    ({"batch_events": BatchEvents(3, "1m"), "priority": Priority("1")},
     "batch_events and priority"),
    ({"batch_events": BatchEvents(3, "1m"), "idempotency": "event.data.id"},
     "batch_events and idempotency"),
    ({"debounce": Debounce("1m"), "idempotency": "event.data.id"},
     "debounce and idempotency"),
    ({"batch_events": BatchEvents(3, "1m"), "singleton": Singleton()},
     "batch_events and singleton"),
    ({"debounce": Debounce("1m"), "singleton": Singleton()}, "debounce and singleton"),
]


@pytest.mark.parametrize(("options", "names"), REFUSED)
def test_a_combination_that_cannot_hold_is_refused_at_declaration(
    steps: CelerySteps, options: dict[str, Any], names: str
) -> None:
    with pytest.raises(ConfigurationError, match=f"'combo': {names} cannot be combined"):
        steps.function(id="combo", trigger="t/x", **options)(lambda ctx: None)
    assert "combo" not in steps.functions


ACCEPTED: list[dict[str, Any]] = [
    {"debounce": Debounce("1s", timeout="1s"), "rate_limit": RateLimit(1, "1s")},
    {"debounce": Debounce("5s"), "throttle": Throttle(1, "1s"), "priority": Priority("0")},
    {"batch_events": BatchEvents(2, "1s"), "throttle": Throttle(1, "1h", burst=3)},
    {"concurrency": [Concurrency(5), Concurrency(1, key="event.data.user")]},
    {"concurrency": (Concurrency(2, key='"openai"', scope="env"),
                     Concurrency(2, key='"openai"'))},
    {"singleton": Singleton(), "rate_limit": RateLimit(1, "1m"), "throttle": Throttle(1, "1m"),
     "idempotency": "event.data.id", "priority": Priority("event.data.p")},
]


@pytest.mark.parametrize("options", ACCEPTED)
def test_combinations_that_hold_are_accepted(steps: CelerySteps,
                                             options: dict[str, Any]) -> None:
    fn = steps.function(id="fine", trigger="t/x", **options)(lambda ctx: None)
    assert steps.functions["fine"] is fn
