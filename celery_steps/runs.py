"""The models the inspection API returns: :class:`Run`, :class:`StepRecord`, :class:`EventInfo`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from celery_steps.events import Event

RunStatus = Literal["queued", "running", "sleeping", "waiting", "completed", "failed", "cancelled"]
StepOp = Literal["run", "sleep", "wait_for_event", "send_event", "invoke", "run_task"]
ENDED = frozenset({"completed", "failed", "cancelled"})


class StepRecord(BaseModel):
    """One step of a run, in the order steps first ran."""

    id: str
    op: StepOp
    status: str
    """``completed``, ``failed``, ``retrying``, ``sleeping``, ``waiting``, ``queued``, or
    ``running`` while its function executes (seen by the executing worker's heartbeat,
    every ``steps_lease_ttl`` / 5 seconds)."""
    attempts: int = 0
    error: dict[str, str] | None = None
    """The last failed attempt's error: ``name``, ``message`` and ``traceback`` (when a
    Python exception caused it; its last 8192 characters)."""
    started_at: datetime | None = None
    ended_at: datetime | None = None
    output: Any = None
    """The step's stored result, once completed."""
    wake_at: datetime | None = None
    """When a sleep ends, a retry is due, or a wait or invoke times out."""
    waiting_for: str | None = None
    """The event name a ``wait_for_event`` step waits for."""
    child_run_id: str | None = None
    """The run an ``invoke`` step started."""
    task_id: str | None = None
    """The Celery task id a ``run_task`` step sent."""


class Run(BaseModel):
    """A run of a function, as stored."""

    id: str
    function_id: str
    status: RunStatus
    output: Any = None
    error: dict[str, str] | None = None
    """Why it failed or was cancelled: ``name``, ``message`` and ``traceback`` (when a
    Python exception caused it)."""
    event_ids: list[str] = Field(default_factory=list)
    steps: list[StepRecord] = Field(default_factory=list)
    created_at: datetime
    ended_at: datetime | None = None
    parent_run_id: str | None = None

    @property
    def ended(self) -> bool:
        return self.status in ENDED


class SkippedStart(BaseModel):
    """A function an event matched that started no run of its own, and why."""

    function_id: str
    reason: str
    run_id: str | None = None


class EventInfo(BaseModel):
    """An accepted event: its payload, when it arrived, and what routing it did."""

    event: Event
    received_at: datetime
    routed: bool
    run_ids: list[str] = Field(default_factory=list)
    skipped: list[SkippedStart] = Field(default_factory=list)
