"""Reading runs for the pages and the API: filters, cursor pages, recent status counts.

Every read is bounded, whatever the number of runs:

- a page without a status filter loads ``limit + 1`` runs through the store's index;
- a page with a status filter looks at no more than :data:`SCAN_LIMIT` runs (newest first
  from the cursor) and keeps those in that status: it may hold fewer than ``limit`` runs
  and still have a next cursor, which continues the scan where it stopped (the store has
  no index by status, so this is what keeps a rare status from loading every run);
- the home page counts a function's newest :data:`RECENT` runs by status.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import get_args

from celery_steps.errors import CeleryStepsError, RunNotFound
from celery_steps.extension import CelerySteps
from celery_steps.runs import Run, RunStatus

STATUSES: tuple[str, ...] = get_args(RunStatus)
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
SCAN_LIMIT = 1000
"""At most this many runs are read for one page with a status filter."""
CHUNK = 200
RECENT = 50
"""How many of a function's newest runs the home page counts by status."""
BULK_LIMIT = 1000
"""At most this many runs per bulk action; run it again for the rest."""
BULK_SCAN = 20 * SCAN_LIMIT
"""At most this many runs are read to select a bulk action's runs."""


class BadQuery(CeleryStepsError):
    """A filter or cursor the dashboard cannot use (shown as a 400 with this message)."""


@dataclass(frozen=True)
class RunFilter:
    function: str | None = None
    status: str | None = None

    def params(self) -> dict[str, str]:
        """The non-empty filters as query parameters."""
        return {k: v for k, v in (("function", self.function), ("status", self.status)) if v}


@dataclass(frozen=True)
class RunPage:
    runs: list[Run]
    next_before: str | None
    """The cursor of the next (older) page: pass it as ``before``; None on the last page."""
    scanned: int = 0
    """How many runs were read to fill the page."""


@dataclass
class Selection:
    """The runs a bulk action selects."""

    runs: list[Run] = field(default_factory=list)
    truncated: bool = False
    """More runs may match than were selected (the cap or the scan limit was reached)."""


def parse_filter(params: Mapping[str, str]) -> RunFilter:
    function = (params.get("function") or "").strip() or None
    status = (params.get("status") or "").strip() or None
    if status is not None and status not in STATUSES:
        raise BadQuery(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
    return RunFilter(function=function, status=status)


def parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise BadQuery(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {raw!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadQuery(f"limit must be from 1 to {MAX_LIMIT}, not {limit}")
    return limit


def _list(steps: CelerySteps, function: str | None, limit: int, before: str | None) -> list[Run]:
    try:
        return steps.list_runs(function_id=function, limit=limit, before=before)
    except RunNotFound:
        raise BadQuery(f"the cursor before={before!r} is not a known run: start from the first "
                       "page") from None


def run_page(steps: CelerySteps, flt: RunFilter, *, limit: int, before: str | None,
             scan_limit: int | None = None) -> RunPage:
    """One page of runs, newest first, and the cursor of the next page; with a status
    filter, read at most ``scan_limit`` runs (default :data:`SCAN_LIMIT`)."""
    scan_limit = scan_limit or SCAN_LIMIT
    if flt.status is None:
        found = _list(steps, flt.function, limit + 1, before or None)
        runs = found[:limit]
        more = len(found) > limit
        return RunPage(runs, runs[-1].id if more and runs else None, len(found))
    matched: list[Run] = []
    cursor, scanned = before or None, 0
    while scanned < scan_limit:
        want = min(CHUNK, scan_limit - scanned)
        chunk = _list(steps, flt.function, want, cursor)
        for run in chunk:
            scanned += 1
            if run.status == flt.status:
                matched.append(run)
                if len(matched) > limit:
                    return RunPage(matched[:limit], matched[limit - 1].id, scanned)
            cursor = run.id
        if len(chunk) < want:
            return RunPage(matched, None, scanned)  # the index is exhausted
    return RunPage(matched, cursor, scanned)


def recent_status_counts(steps: CelerySteps, function_id: str) -> tuple[Counter[str], bool]:
    """Statuses of the function's newest :data:`RECENT` runs; True when it has more."""
    runs = steps.list_runs(function_id=function_id, limit=RECENT + 1)
    return Counter(run.status for run in runs[:RECENT]), len(runs) > RECENT


def select_runs(steps: CelerySteps, flt: RunFilter, cap: int | None = None,
                scan_limit: int | None = None) -> Selection:
    """The runs a filter selects, newest first: at most ``cap`` (:data:`BULK_LIMIT`),
    reading at most ``scan_limit`` runs (:data:`BULK_SCAN`), page by page."""
    cap = cap or BULK_LIMIT
    scan_limit = scan_limit or BULK_SCAN
    selection = Selection()
    before: str | None = None
    scanned = 0
    while True:
        page = run_page(steps, flt, limit=min(CHUNK, cap + 1 - len(selection.runs)),
                        before=before, scan_limit=min(SCAN_LIMIT, scan_limit - scanned))
        selection.runs += page.runs
        scanned += page.scanned
        if len(selection.runs) > cap:
            selection.runs = selection.runs[:cap]
            selection.truncated = True
            return selection
        if page.next_before is None:
            return selection
        if scanned >= scan_limit:
            selection.truncated = True
            return selection
        before = page.next_before
