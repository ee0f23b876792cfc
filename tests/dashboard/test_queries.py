"""Bounded reads: a status filter scans a limited number of runs per page, bulk selections
stop at their cap or scan limit."""

from __future__ import annotations

import pytest

from celery_steps import CelerySteps
from celery_steps.clock import FakeClock
from celery_steps.dashboard import queries
from celery_steps.dashboard.queries import RunFilter, run_page, select_runs
from tests.dashboard.conftest import start


@pytest.fixture
def history(steps: CelerySteps, clock: FakeClock) -> dict[str, list[str]]:
    """One sleeping shipment, then nine failed runs after it (newest last)."""
    sleeping = [start(steps, "shop/order.ship", {"order": 1}, finish=False)]
    clock.advance(1)
    failed = []
    for n in range(9):
        failed.append(start(steps, "shop/explode", {"n": n}))
        clock.advance(1)
    return {"sleeping": sleeping, "failed": failed}


def test_a_status_page_reads_at_most_the_scan_limit_and_continues_from_there(
    steps: CelerySteps, history: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a scan limit of 4 runs per page and a status only the oldest run has
    monkeypatch.setattr(queries, "SCAN_LIMIT", 4)
    loaded: list[str] = []
    list_runs = steps.list_runs

    def counting(**kwargs: object) -> list[object]:
        found = list_runs(**kwargs)  # type: ignore[arg-type]
        loaded.extend(r.id for r in found)
        return found  # type: ignore[return-value]

    monkeypatch.setattr(steps, "list_runs", counting)

    # when the pages are followed
    pages = []
    before = None
    while True:
        loaded.clear()
        page = run_page(steps, RunFilter(status="sleeping"), limit=50, before=before)
        pages.append((page, len(loaded)))
        if page.next_before is None:
            break
        before = page.next_before

    # then no page read more than 4 runs, the empty pages carry a cursor, and the run is found
    assert [len(p.runs) for p, _ in pages] == [0, 0, 1]
    assert all(read <= 4 for _, read in pages)
    assert pages[0][0].next_before == history["failed"][-4]
    assert [r.id for r in pages[-1][0].runs] == history["sleeping"]


def test_a_full_status_page_gives_the_cursor_after_its_last_run(
    steps: CelerySteps, history: dict[str, list[str]]
) -> None:
    page = run_page(steps, RunFilter(status="failed"), limit=3, before=None)
    assert [r.id for r in page.runs] == history["failed"][::-1][:3]
    assert page.next_before == history["failed"][-3]


def test_a_bulk_selection_stops_at_its_cap(steps: CelerySteps,
                                           history: dict[str, list[str]]) -> None:
    selection = select_runs(steps, RunFilter(function="explode"), cap=5)
    assert [r.id for r in selection.runs] == history["failed"][::-1][:5]
    assert selection.truncated


def test_a_bulk_selection_stops_at_its_scan_limit(steps: CelerySteps,
                                                  history: dict[str, list[str]]) -> None:
    selection = select_runs(steps, RunFilter(status="sleeping"), cap=5, scan_limit=6)
    assert selection.runs == []
    assert selection.truncated


def test_a_bulk_selection_takes_every_match_when_within_limits(
    steps: CelerySteps, history: dict[str, list[str]]
) -> None:
    selection = select_runs(steps, RunFilter(status="sleeping"))
    assert [r.id for r in selection.runs] == history["sleeping"]
    assert not selection.truncated
