"""The Celery app, configured from Django settings (``CELERY_*``), with celery-steps."""

from __future__ import annotations

import os

from celery import Celery

from celery_steps import CelerySteps

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Celery("proj")
app.config_from_object("django.conf:settings", namespace="CELERY")
steps = CelerySteps(app)
app.autodiscover_tasks()
