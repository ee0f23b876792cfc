"""The Django app config of ``celery_steps.contrib.django``."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class CeleryStepsConfig(AppConfig):
    """Imports each installed app's ``steps`` module when Django starts."""

    name = "celery_steps.contrib.django"
    label = "celery_steps"
    verbose_name = "Celery Steps"

    def ready(self) -> None:
        autodiscover_modules("steps")
