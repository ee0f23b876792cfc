"""Cancel and replay, for one run or every run a filter selects; shared by pages and API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from celery_steps.dashboard.queries import RunFilter, select_runs
from celery_steps.extension import CelerySteps
from celery_steps.runs import ENDED

Action = Literal["cancel", "replay"]
ACTIONS: tuple[Action, ...] = ("cancel", "replay")
CANCEL_REASON = "cancelled from the dashboard"


def cancel_run(steps: CelerySteps, run_id: str) -> dict[str, Any]:
    """Cancel a run unless it has ended; what happened, as the API returns it."""
    before = steps.get_run(run_id)
    if not before.ended:
        steps.cancel(run_id, reason=CANCEL_REASON)
    after = steps.get_run(run_id)
    return {"run_id": run_id, "status": after.status,
            "cancelled": not before.ended and after.status == "cancelled"}


def replay_run(steps: CelerySteps, run_id: str) -> dict[str, Any]:
    return {"run_id": steps.replay(run_id), "replay_of": run_id}


@dataclass
class BulkResult:
    action: Action
    filter: RunFilter
    matched: int = 0
    """Runs the filter selected (at most :data:`~celery_steps.dashboard.queries.BULK_LIMIT`)."""
    run_ids: list[str] = field(default_factory=list)
    """The runs cancelled, or the new runs the replays started."""
    skipped: int = 0
    """Runs left alone: already ended, for a cancel."""
    truncated: bool = False
    """More runs may match than one bulk action handles: run it again for the rest."""

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "filter": self.filter.params(), "matched": self.matched,
                "run_ids": self.run_ids, "skipped": self.skipped, "truncated": self.truncated}


def again_reaches_the_rest(action: Action, flt: RunFilter) -> bool:
    """Whether running a truncated bulk action again acts on the runs it left: only a cancel
    filtered by a status the runs leave when cancelled; anything else selects the same
    newest runs again."""
    return action == "cancel" and flt.status is not None and flt.status not in ENDED


def bulk(steps: CelerySteps, action: Action, flt: RunFilter,
         cap: int | None = None) -> BulkResult:
    """Apply ``action`` to every run ``flt`` selects, newest first, at most ``cap``
    (:data:`~celery_steps.dashboard.queries.BULK_LIMIT`)."""
    selection = select_runs(steps, flt, cap)
    result = BulkResult(action, flt, matched=len(selection.runs), truncated=selection.truncated)
    for run in selection.runs:
        if action == "replay":
            result.run_ids.append(steps.replay(run.id))
        elif run.ended:
            result.skipped += 1
        elif cancel_run(steps, run.id)["cancelled"]:
            result.run_ids.append(run.id)
        else:
            result.skipped += 1
    return result
