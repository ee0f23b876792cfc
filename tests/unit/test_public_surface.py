"""The public facade holds what the docs document, and nothing of the plumbing below it:
``CelerySteps``, the handler's ``Context`` and its step tools, ``Function`` and ``Run``."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from pydantic import BaseModel

import celery_steps
from celery_steps import CelerySteps, Context, Function, Run
from celery_steps.testing import eager_steps
from tests.conftest import ROOT

DOCUMENTED = {
    "app", "runtime", "settings", "clock", "functions", "from_app", "function", "send",
    "get_run", "get_event", "runs_for_event", "wait_for_run", "list_runs", "cancel", "replay",
}
# Kept for code written before the runtime layer (it warns): documented as deprecated.
DEPRECATED = {"store"}
PLUMBING = {
    "create_and_enqueue", "enqueue", "execute", "publish_route", "start_cron_run",
    "send_step_events", "start_child", "on_run_ended", "resolve_task_step", "safety_wake_at",
    "registry", "executor", "route",
}


def test_the_facade_offers_exactly_the_documented_names() -> None:
    # given a CelerySteps as a user's editor sees it
    steps = eager_steps()

    # when listing what `steps.` completes to
    public = {name for name in dir(steps) if not name.startswith("_")}

    # then it is the documented API (and its deprecated names), and none of the plumbing
    assert public == DOCUMENTED | DEPRECATED
    assert not public & PLUMBING


def test_the_deprecated_store_attribute_warns_and_names_its_new_place() -> None:
    steps = eager_steps()
    with pytest.warns(DeprecationWarning, match=r"use steps\.runtime\.store"):
        store = steps.store
    assert store is steps.runtime.store


def test_every_public_name_of_the_package_is_importable_from_the_top() -> None:
    for name in celery_steps.__all__:
        assert getattr(celery_steps, name) is not None
    assert celery_steps.CelerySteps is CelerySteps


REFERENCE = ROOT / "docs" / "execution-model.md"
CONTEXT_DOCUMENTED = {"event", "events", "step", "run_id", "function_id", "logger", "attempt"}
STEP_TOOLS_DOCUMENTED = {"run", "sleep", "sleep_until", "wait_for_event", "send_event", "invoke",
                         "parallel", "run_task", "attempt"}
FUNCTION_DOCUMENTED = {"id", "name", "task_name", "queue", "retries", "triggers", "timeouts",
                       "invoke"}
RUN_DOCUMENTED = {"id", "function_id", "status", "output", "error", "event_ids", "steps",
                  "created_at", "ended_at", "parent_run_id", "ended"}


def _public(obj: object, *, besides: object = object) -> set[str]:
    """What ``obj.`` completes to in an editor, less what ``besides`` (a base class) offers."""
    return {name for name in dir(obj) if not name.startswith("_")} - set(dir(besides))


@dataclass
class Seen:
    """The objects a handler and its caller get, from one real run."""

    ctx: Context
    function: Function
    run: Run


@pytest.fixture(scope="module")
def seen() -> Seen:
    steps = eager_steps()
    contexts: list[Context] = []

    @steps.function(id="look", trigger="t/look")
    def look(ctx: Context) -> int:
        contexts.append(ctx)
        return int(ctx.step.run("one", lambda: 1))

    [run] = steps.runs_for_event(steps.send("t/look")[0])
    return Seen(contexts[-1], look, steps.get_run(run.id))


def _reference_row(label: str) -> str:
    """The row of the docs' reference table that documents ``label``'s attributes."""
    [row] = [line for line in REFERENCE.read_text().splitlines()
             if line.startswith(f"| {label}")]
    return row


@pytest.mark.parametrize(("label", "names"), [
    ("`Context`", CONTEXT_DOCUMENTED), ("`ctx.step`", STEP_TOOLS_DOCUMENTED),
    ("`Function`", FUNCTION_DOCUMENTED), ("`Run`", RUN_DOCUMENTED),
])
def test_the_documented_names_are_the_ones_the_docs_reference_lists(
    label: str, names: set[str],
) -> None:
    row = _reference_row(label)
    listed = set(re.findall(r"`([a-z_]+)[`(]", row))
    assert names <= listed, names - listed


def test_a_handlers_context_offers_exactly_the_documented_names(seen: Seen) -> None:
    assert _public(seen.ctx) == CONTEXT_DOCUMENTED


def test_the_step_tools_offer_exactly_the_documented_names(seen: Seen) -> None:
    assert _public(seen.ctx.step) == STEP_TOOLS_DOCUMENTED


def test_a_function_offers_exactly_the_documented_names(seen: Seen) -> None:
    assert _public(seen.function) == FUNCTION_DOCUMENTED


def test_a_run_offers_exactly_the_documented_fields_besides_pydantics_api(seen: Seen) -> None:
    assert _public(seen.run, besides=BaseModel) == RUN_DOCUMENTED
    assert seen.run.ended and seen.run.status == "completed"
