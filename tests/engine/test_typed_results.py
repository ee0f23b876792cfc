"""ctx.step.run rebuilds a result typed as a pydantic model or dataclass, first run and replay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pytest
from pydantic import BaseModel

from celery_steps import CelerySteps, Context
from celery_steps.engine import results as results_module
from celery_steps.testing import settle


class Charge(BaseModel):
    id: str
    amount_cents: int


@dataclass
class Receipt:
    number: int
    lines: list[str]


def charge() -> Charge:
    return Charge(id="ch_1", amount_cents=4599)


def receipt() -> Receipt:
    return Receipt(number=7, lines=["mug", "tea"])


def charges() -> list[Charge]:
    return [Charge(id="a", amount_cents=1), Charge(id="b", amount_cents=2)]


def maybe_charge() -> Optional[Charge]:  # noqa: UP045 (the typing.Optional spelling on purpose)
    return None


def plain() -> dict[str, Any]:
    return {"id": "ch_1", "amount_cents": 4599}


def unannotated():  # type: ignore[no-untyped-def]
    return Charge(id="ch_1", amount_cents=4599)


def wrong_shape() -> Charge:
    return {"id": "ch_1"}  # type: ignore[return-value]


def run_twice(steps: CelerySteps, step_fn: Any) -> tuple[list[Any], Any]:
    """Run ``step_fn`` as a step, then fail the handler once so the run replays that step."""
    seen: list[Any] = []

    @steps.function(id="typed", trigger="t/typed", retries=1)
    def typed(ctx: Context) -> str:
        seen.append(ctx.step.run("make", step_fn))
        if ctx.attempt == 0:
            raise RuntimeError("fail once after the step: the retry replays it")
        return "done"

    [event_id] = steps.send("t/typed")
    run = settle(steps, steps.runs_for_event(event_id)[0].id)
    return seen, run


@pytest.mark.parametrize(
    ("step_fn", "expected"),
    [
        (charge, Charge(id="ch_1", amount_cents=4599)),
        (receipt, Receipt(number=7, lines=["mug", "tea"])),
        (charges, [Charge(id="a", amount_cents=1), Charge(id="b", amount_cents=2)]),
        (maybe_charge, None),
    ],
    ids=["model", "dataclass", "list-of-models", "optional-model"],
)
def test_a_typed_step_gives_the_declared_type_on_first_run_and_on_replay(
    steps: CelerySteps, step_fn: Any, expected: Any
) -> None:
    # when a step whose function returns a model runs, then the handler replays it
    seen, run = run_twice(steps, step_fn)

    # then both executions got the same value of the declared type, rebuilt from JSON
    assert run.status == "completed"
    assert seen == [expected, expected]
    assert [type(v) for v in seen] == [type(expected)] * 2
    assert run.steps[0].attempts == 1  # the step ran once; the second value is a replay


def test_a_stored_typed_result_is_plain_json(steps: CelerySteps) -> None:
    _, run = run_twice(steps, receipt)

    assert run.steps[0].output == {"number": 7, "lines": ["mug", "tea"]}


@pytest.mark.parametrize(
    "step_fn", [plain, unannotated, lambda: Charge(id="ch_1", amount_cents=4599)],
    ids=["dict-annotation", "no-annotation", "lambda"],
)
def test_an_untyped_step_gives_json_as_before(steps: CelerySteps, step_fn: Any) -> None:
    seen, _ = run_twice(steps, step_fn)

    assert seen == [{"id": "ch_1", "amount_cents": 4599}] * 2
    assert all(type(v) is dict for v in seen)


def test_a_result_that_does_not_fit_its_type_fails_the_step_naming_it(
    steps: CelerySteps,
) -> None:
    seen, run = run_twice(steps, wrong_shape)

    assert run.status == "failed"
    assert run.steps[0].attempts == 1  # never retried
    assert run.error is not None and run.error["name"] == "SerializationError"
    assert "'make'" in run.error["message"] and "Charge" in run.error["message"]
    assert seen == []


def test_a_stored_result_that_no_longer_fits_fails_the_run_naming_the_step(
    steps: CelerySteps,
) -> None:
    # given a run whose step stored a dict, and a deploy that now annotates the step with a model
    version = {"typed": False}

    def make():  # type: ignore[no-untyped-def]
        return {"id": "ch_1"}

    @steps.function(id="redeployed", trigger="t/redeployed", retries=1)
    def redeployed(ctx: Context) -> Any:
        step_fn = wrong_shape if version["typed"] else make
        value = ctx.step.run("make", step_fn)
        if not version["typed"]:
            version["typed"] = True
            raise RuntimeError("replay under the new code")
        return value

    [event_id] = steps.send("t/redeployed")
    run = settle(steps, steps.runs_for_event(event_id)[0].id)

    # then the replay cannot rebuild the stored value: a clear, non-retried failure
    assert run.status == "failed"
    assert run.error is not None and run.error["name"] == "SerializationError"
    assert "'make'" in run.error["message"]


def test_the_return_type_is_resolved_once_per_function(
    steps: CelerySteps, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    real = results_module.get_type_hints

    def counting(obj: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(obj)
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(results_module, "get_type_hints", counting)

    def fresh_charge() -> Charge:  # a function object no earlier test has seen
        return charge()

    # when typed and untyped steps run many times
    @steps.function(id="many", trigger="t/many")
    def many(ctx: Context) -> int:
        for i in range(20):
            ctx.step.run(f"typed-{i}", fresh_charge)
            ctx.step.run(f"lambda-{i}", lambda: 1)
            ctx.step.run(f"plain-{i}", unannotated)
        return 0

    [event_id] = steps.send("t/many")
    run = settle(steps, steps.runs_for_event(event_id)[0].id)

    # then the typed function's hints were read once; untyped functions were never inspected
    assert run.status == "completed"
    assert calls == [fresh_charge]
