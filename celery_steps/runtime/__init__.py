"""The runtime layer: owns the run lifecycle below the public API.

Accept an event, route it, admit it under flow control, create the run, enqueue it, execute
it (through the engine), end it and notify what follows. It depends on the store, the clock,
the settings, the registry and one narrow port to the broker (:class:`Transport`), which the
Celery glue implements. It never imports Celery or the public facade.
"""

from __future__ import annotations

from celery_steps.runtime.ports import Publisher, Transport
from celery_steps.runtime.runtime import Runtime

__all__ = ["Publisher", "Runtime", "Transport"]
