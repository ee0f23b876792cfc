"""The Celery glue: tasks, the worker bootstep and the timer poller."""

from __future__ import annotations

from celery_steps.integration.tasks import (
    ROUTE_TASK,
    install,
    register_function,
    send_task_step,
)

__all__ = ["ROUTE_TASK", "install", "register_function", "send_task_step"]
