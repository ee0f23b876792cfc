"""A run's step timeline: one bar per step, placed on the run's span.

Positions are in thousandths of the span (0..1000) so the template can draw each bar as an
SVG ``rect`` (attributes, not inline styles: the page's CSP allows no inline style).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from celery_steps.dashboard.formatting import format_duration, format_span, format_time
from celery_steps.runs import Run, StepRecord

SCALE = 1000
MIN_WIDTH = 4.0  # a step of a few ms stays visible on a span of hours


@dataclass(frozen=True)
class Bar:
    """One step on the timeline."""

    step: StepRecord
    number: int
    left: float
    width: float
    offset: str
    duration: str
    open: bool
    """The step has not ended: the bar runs to the end of the span."""
    note: str
    """Sleep, wait, invoke or task details (e.g. ``wakes at ...``, ``waits for shop/x``)."""

    @property
    def drawn(self) -> bool:
        return self.step.started_at is not None


@dataclass(frozen=True)
class Timeline:
    start: datetime
    end: datetime
    bars: list[Bar]

    @property
    def total(self) -> str:
        return format_span(self.end - self.start)


def span_end(run: Run, now: datetime) -> datetime:
    """The run's end, or now while it goes on; never before its last recorded step time."""
    end = run.ended_at or max(now, run.created_at)
    times = [t for s in run.steps for t in (s.started_at, s.ended_at) if t is not None]
    return max([end, *times])


def step_note(step: StepRecord) -> str:
    if step.op == "sleep" and step.wake_at:
        return f"wakes at {format_time(step.wake_at)}"
    if step.op == "wait_for_event" and step.waiting_for:
        timeout = f", times out at {format_time(step.wake_at)}" if step.wake_at else ""
        verb = "waits" if step.status == "waiting" else "waited"
        return f"{verb} for {step.waiting_for}{timeout}"
    if step.op == "run_task" and step.task_id:
        return f"Celery task {step.task_id}"
    if step.status == "retrying" and step.wake_at:
        return f"retries at {format_time(step.wake_at)}"
    if step.wake_at:
        return f"times out at {format_time(step.wake_at)}"
    return ""


def build_timeline(run: Run, now: datetime) -> Timeline:
    start = run.created_at
    end = span_end(run, now)
    span_ms = max((end - start) / timedelta(milliseconds=1), 1.0)
    bars = []
    for number, step in enumerate(run.steps, 1):
        left = width = 0.0
        is_open = step.ended_at is None
        if step.started_at is not None:
            stop = step.ended_at or end
            left = min((step.started_at - start) / timedelta(milliseconds=1) / span_ms * SCALE,
                       SCALE - MIN_WIDTH)
            left = max(left, 0.0)
            width = (stop - step.started_at) / timedelta(milliseconds=1) / span_ms * SCALE
            width = min(max(width, MIN_WIDTH), SCALE - left)
        bars.append(Bar(
            step=step, number=number, left=round(left, 2), width=round(width, 2),
            offset="+" + format_duration(start, step.started_at) if step.started_at else "-",
            duration=format_duration(step.started_at, step.ended_at) if not is_open
            else ("running" if step.status == "running" else "-"),
            open=is_open, note=step_note(step)))
    return Timeline(start=start, end=end, bars=bars)
