"""Settings of the example project: a sqlite database and Redis from ``REDIS_URL``."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "example-project-not-secret"
DEBUG = True
ALLOWED_HOSTS: list[str] = ["*"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "celery_steps.contrib.django",
    "shop",
]

ROOT_URLCONF = "proj.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

# Celery, configured as in Celery's Django guide: every CELERY_* setting reaches app.conf.
REDIS_URL = os.environ.get("REDIS_URL")
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    CELERY_STEPS_STORE_URL = REDIS_URL
else:  # one process only: `manage.py demo` sets REDIS_URL to an embedded Redis
    CELERY_BROKER_URL = "memory://"
    CELERY_RESULT_BACKEND = "cache+memory://"
    CELERY_STEPS_STORE_URL = "memory://"
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]

# celery-steps settings (steps_* in app.conf). A quick retry so the demo is fast.
CELERY_STEPS_RETRY_BACKOFF_BASE = 0.2
