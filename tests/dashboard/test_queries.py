"""Reads by status come from the store's status index: a page asks for ``limit + 1`` runs in
that status (full pages, a cursor exactly when more exist), a bulk selection for its cap + 1."""

from __future__ import annotations

from typing import Any

import pytest

from celery_steps import CelerySteps
from celery_steps.clock import FakeClock
from celery_steps.dashboard.queries import RunFilter, run_page, select_runs
from tests.dashboard.conftest import start

History = dict[str, list[str]]


@pytest.fixture
def history(steps: CelerySteps, clock: FakeClock) -> History:
    """40 failed runs with a sleeping shipment after every 10th (4 of 44): oldest first."""
    failed: list[str] = []
    sleeping: list[str] = []
    for n in range(40):
        failed.append(start(steps, "shop/explode", {"n": n}))
        clock.advance(1)
        if n % 10 == 4:
            sleeping.append(start(steps, "shop/order.ship", {"order": n}, finish=False))
            clock.advance(1)
    return {"failed": failed, "sleeping": sleeping}


@pytest.fixture
def calls(steps: CelerySteps, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The arguments of every ``steps.list_runs`` call, with the number of runs it returned."""
    seen: list[dict[str, Any]] = []
    list_runs = steps.list_runs

    def spy(**kwargs: Any) -> Any:
        found = list_runs(**kwargs)
        seen.append({**kwargs, "returned": len(found)})
        return found

    monkeypatch.setattr(steps, "list_runs", spy)
    return seen


def pages(steps: CelerySteps, flt: RunFilter, limit: int) -> list[list[str]]:
    """Follow the cursors from the first page to the last; each page's run ids."""
    found: list[list[str]] = []
    before = None
    while True:
        page = run_page(steps, flt, limit=limit, before=before)
        found.append([r.id for r in page.runs])
        if page.next_before is None:
            return found
        assert page.next_before == page.runs[-1].id
        before = page.next_before


def test_a_page_of_a_rare_status_is_full_and_read_in_one_store_call(
    steps: CelerySteps, history: History, calls: list[dict[str, Any]]
) -> None:
    # given 4 sleeping runs among 44, the newest sleeping one older than 5 failed runs
    # when the first page of 3 sleeping runs is read
    page = run_page(steps, RunFilter(status="sleeping"), limit=3, before=None)

    # then it holds the 3 newest, its cursor is the last of them, and one call asked the
    # store's status index for one run more than the page
    assert [r.id for r in page.runs] == history["sleeping"][::-1][:3]
    assert page.next_before == history["sleeping"][1]
    assert calls == [{"function_id": None, "status": "sleeping", "limit": 4, "before": None,
                      "returned": 4}]


def test_a_status_page_has_a_cursor_exactly_when_more_runs_exist(
    steps: CelerySteps, history: History
) -> None:
    # given 4 sleeping runs
    flt = RunFilter(status="sleeping")

    # when they are read in a page of exactly 4, and from the cursor before the oldest but one
    exact = run_page(steps, flt, limit=4, before=None)
    last = run_page(steps, flt, limit=4, before=history["sleeping"][1])
    past = run_page(steps, flt, limit=4, before=history["sleeping"][0])

    # then neither has a cursor, the last holds the oldest run, past it nothing is left
    assert [r.id for r in exact.runs] == history["sleeping"][::-1]
    assert exact.next_before is None
    assert [r.id for r in last.runs] == history["sleeping"][:1]
    assert last.next_before is None
    assert past.runs == [] and past.next_before is None


CASES = [  # (function, status): the history list every page of them should add up to
    ((None, "sleeping"), "sleeping"),
    (("ship", "sleeping"), "sleeping"),
    ((None, "failed"), "failed"),
    (("explode", "failed"), "failed"),
    (("ship", "failed"), None),
    ((None, "running"), None),
]


def test_paging_through_one_status_returns_each_run_once_newest_first(
    steps: CelerySteps, history: History
) -> None:
    for (function, status), expected in CASES:
        for limit in (1, 3, 7):
            # when every page of one status (and maybe one function) is followed
            found = pages(steps, RunFilter(function=function, status=status), limit)

            # then the pages hold every matching run once, newest first, all but the last full
            case = f"function={function} status={status} limit={limit}"
            want = history[expected][::-1] if expected else []
            assert [run_id for page in found for run_id in page] == want, case
            assert all(len(page) == limit for page in found[:-1]), case
            assert len(found) == max(1, -(-len(want) // limit)), case


def test_a_bulk_selection_stops_at_its_cap_and_says_more_matched(
    steps: CelerySteps, history: History, calls: list[dict[str, Any]]
) -> None:
    # given 40 failed runs
    # when at most 5 are selected
    selection = select_runs(steps, RunFilter(status="failed"), cap=5)

    # then the newest 5 are, it says more matched, and it read only one run past the cap
    assert [r.id for r in selection.runs] == history["failed"][::-1][:5]
    assert selection.truncated
    assert calls == [{"function_id": None, "status": "failed", "limit": 6, "before": None,
                      "returned": 6}]


def test_a_bulk_selection_of_exactly_its_cap_is_not_truncated(
    steps: CelerySteps, history: History
) -> None:
    # given 4 sleeping runs
    # when they are selected with a cap of 4, and of 3
    exact = select_runs(steps, RunFilter(status="sleeping"), cap=4)
    under = select_runs(steps, RunFilter(status="sleeping"), cap=3)

    # then the cap of 4 takes them all and is complete; the cap of 3 is truncated
    assert [r.id for r in exact.runs] == history["sleeping"][::-1]
    assert not exact.truncated
    assert [r.id for r in under.runs] == history["sleeping"][::-1][:3]
    assert under.truncated


def test_a_bulk_selection_takes_every_match_under_the_default_cap(
    steps: CelerySteps, history: History
) -> None:
    selection = select_runs(steps, RunFilter(function="explode", status="failed"))
    assert [r.id for r in selection.runs] == history["failed"][::-1]
    assert not selection.truncated
