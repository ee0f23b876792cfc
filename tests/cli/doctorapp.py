"""The app ``celery steps doctor`` is tested on, with real workers: configured from the env.

``DOCTOR_REDIS_URL`` is both broker and store; ``DOCTOR_NAMESPACE`` names the default queue
(and the key namespace); the ``resize`` function declares the queue ``<namespace>-images``.
"""

from __future__ import annotations

import os

from celery import Celery

from celery_steps import CelerySteps, Context, TriggerCron

URL = os.environ.get("DOCTOR_REDIS_URL", "redis://127.0.0.1:6379/0")
NS = os.environ.get("DOCTOR_NAMESPACE", "doctor")
IMAGES = f"{NS}-images"

app = Celery("doctorapp", broker=URL)
app.conf.update(
    steps_store_url=URL,
    steps_namespace=NS,
    task_default_queue=NS,
    broker_connection_retry_on_startup=True,
)
steps = CelerySteps(app)


@steps.function(id="resize", trigger="doctor/resize", queue=IMAGES)
def resize(ctx: Context) -> None:
    return None


@steps.function(id="nightly", trigger=TriggerCron("0 3 * * *"))
def nightly(ctx: Context) -> None:
    return None
