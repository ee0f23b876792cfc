"""celery-steps: durable step functions for the Celery app you already run.

``steps = CelerySteps(app)``, then ``@steps.function(id=..., trigger=...)``. See
``docs/execution-model.md`` for how runs replay and what is guaranteed.
"""

from __future__ import annotations

from celery_steps.context import Context
from celery_steps.engine.runlog import RunLogFilter
from celery_steps.errors import (
    CeleryStepsError,
    ConfigurationError,
    EventNotFound,
    InvalidEventError,
    NonDeterminismError,
    NonRetriableError,
    RetryAfterError,
    RunFailedError,
    RunLimitError,
    RunNotFound,
    SerializationError,
    StepError,
    StoreEvictionError,
    WorkerLostError,
)
from celery_steps.events import Event
from celery_steps.extension import CelerySteps
from celery_steps.functions import Function
from celery_steps.options import (
    BatchEvents,
    CancelOn,
    Concurrency,
    Debounce,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
    Timeouts,
    TriggerCron,
    TriggerEvent,
)
from celery_steps.runs import EventInfo, Run, SkippedStart, StepRecord

__version__ = "0.1.0"

__all__ = [
    "BatchEvents",
    "CancelOn",
    "CelerySteps",
    "CeleryStepsError",
    "Concurrency",
    "ConfigurationError",
    "Context",
    "Debounce",
    "Event",
    "EventInfo",
    "EventNotFound",
    "Function",
    "InvalidEventError",
    "NonDeterminismError",
    "NonRetriableError",
    "Priority",
    "RateLimit",
    "RetryAfterError",
    "Run",
    "RunFailedError",
    "RunLimitError",
    "RunLogFilter",
    "RunNotFound",
    "SerializationError",
    "Singleton",
    "SkippedStart",
    "StepError",
    "StepRecord",
    "StoreEvictionError",
    "Throttle",
    "Timeouts",
    "TriggerCron",
    "TriggerEvent",
    "WorkerLostError",
]
