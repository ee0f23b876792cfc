"""Conversion from stored records to the public :class:`~celery_steps.runs.Run` model."""

from __future__ import annotations

from celery_steps.clock import ms_to_datetime
from celery_steps.runs import Run, StepRecord
from celery_steps.store.base import RunRecord


def to_run(record: RunRecord) -> Run:
    steps = [
        StepRecord(
            id=key,
            op=state.get("op", "run"),
            status=state.get("status", "unknown"),
            attempts=int(state.get("attempts", 0)),
            error=state.get("error") if state.get("status") in ("failed", "retrying") else None,
            started_at=ms_to_datetime(state.get("started_at")),
            ended_at=ms_to_datetime(state.get("ended_at")),
            output=state.get("result") if state.get("status") == "completed" else None,
            wake_at=(None if state.get("status") in ("completed", "failed")
                     else ms_to_datetime(state.get("wake_at"))),
            waiting_for=state.get("event"),
            child_run_id=state.get("child"),
            task_id=state.get("task_id"),
        )
        for key, state in record.ordered_steps()
    ]
    created = ms_to_datetime(record.created_at)
    assert created is not None
    return Run(
        id=record.id,
        function_id=record.function_id,
        status=record.status,  # type: ignore[arg-type]
        output=record.output,
        error=record.error,
        event_ids=record.event_ids,
        steps=steps,
        created_at=created,
        ended_at=ms_to_datetime(record.ended_at),
        parent_run_id=(record.parent or {}).get("run_id"),
    )
