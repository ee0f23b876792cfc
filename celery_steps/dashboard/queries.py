"""Reading runs for the pages and the API: filters, cursor pages, recent status counts.

Every read is bounded, whatever the number of runs:

- a page loads ``limit + 1`` runs through the store's index (by function, or by status when
  it filters by status, so a rare status costs what a common one does): a full page
  whenever that many runs match, and a next cursor exactly when more do;
- a bulk selection is one such page, of :data:`BULK_LIMIT` runs;
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
RECENT = 50
"""How many of a function's newest runs the home page counts by status."""
BULK_LIMIT = 1000
"""At most this many runs per bulk action: the newest its filter selects."""


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


@dataclass
class Selection:
    """The runs a bulk action selects."""

    runs: list[Run] = field(default_factory=list)
    truncated: bool = False
    """More runs matched than the cap: these are the newest of them."""


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


def _list(steps: CelerySteps, flt: RunFilter, limit: int, before: str | None) -> list[Run]:
    try:
        return steps.list_runs(function_id=flt.function, status=flt.status, limit=limit,
                               before=before)
    except RunNotFound:
        raise BadQuery(f"the cursor before={before!r} is not a known run: start from the first "
                       "page") from None


def run_page(steps: CelerySteps, flt: RunFilter, *, limit: int, before: str | None) -> RunPage:
    """One page of the runs ``flt`` selects, newest first, and the cursor of the next page
    (reading one run more than the page tells whether there is one)."""
    found = _list(steps, flt, limit + 1, before or None)
    runs = found[:limit]
    return RunPage(runs, runs[-1].id if len(found) > limit else None)


def recent_status_counts(steps: CelerySteps, function_id: str) -> tuple[Counter[str], bool]:
    """Statuses of the function's newest :data:`RECENT` runs; True when it has more."""
    runs = steps.list_runs(function_id=function_id, limit=RECENT + 1)
    return Counter(run.status for run in runs[:RECENT]), len(runs) > RECENT


def select_runs(steps: CelerySteps, flt: RunFilter, cap: int | None = None) -> Selection:
    """The runs a filter selects, newest first, at most ``cap`` (:data:`BULK_LIMIT`): one
    page of ``cap`` read like :func:`run_page`, ``truncated`` when more match."""
    cap = cap or BULK_LIMIT
    found = _list(steps, flt, cap + 1, None)
    return Selection(found[:cap], truncated=len(found) > cap)
