"""Conversion from stored records to the public :class:`~celery_steps.runs.Run` model."""

from __future__ import annotations

from celery_steps.clock import ms_to_datetime
from celery_steps.runs import Run, StepRecord
from celery_steps.store.base import FINAL, RunRecord


def to_run(record: RunRecord) -> Run:
    """The public model of a stored run, with the step its holder executes now (if any)."""
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
    if record.status == "running" and record.running_step is not None:
        _add_running(record, steps, *record.running_step)
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


def _add_running(record: RunRecord, steps: list[StepRecord], key: str, since: int) -> None:
    """Mark the step executing now (from the holder's last heartbeat) as ``running``; a
    step already final was checkpointed since that beat."""
    state = record.steps.get(key)
    if state is not None and state.get("status") in FINAL:
        return
    for index, step in enumerate(steps):
        if step.id == key:  # a retry: the earlier attempts' record, one more attempt
            steps[index] = step.model_copy(update={
                "status": "running", "attempts": step.attempts + 1, "wake_at": None})
            return
    steps.append(StepRecord(id=key, op="run", status="running", attempts=1,
                            started_at=ms_to_datetime(since)))
