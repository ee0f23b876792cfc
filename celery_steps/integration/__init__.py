"""The Celery glue: the transport port on Celery, the tasks, the worker bootstep, beat entries.

The only layer besides the facade's constructor that imports Celery.
"""

from __future__ import annotations

from celery_steps.integration.bootstep import runtime_of
from celery_steps.integration.tasks import install, register_function
from celery_steps.integration.transport import CeleryTransport

__all__ = ["CeleryTransport", "install", "register_function", "runtime_of"]
