"""``celery -A tests.dashboard.dashapp steps dashboard``: the shop on the Redis the test names.

``CELERY_STEPS_TEST_REDIS_URL`` and ``CELERY_STEPS_TEST_NAMESPACE`` point it at the store
the test filled.
"""

from __future__ import annotations

import os

from celery import Celery

from celery_steps import CelerySteps
from tests.dashboard.shop import declare

app = Celery("dashapp", broker="memory://", set_as_current=False)
app.conf.update(
    task_always_eager=True,
    steps_timer_poller=False,
    steps_store_url=os.environ.get("CELERY_STEPS_TEST_REDIS_URL", "memory://"),
    steps_namespace=os.environ.get("CELERY_STEPS_TEST_NAMESPACE", "dashboard_tests"),
)
steps = CelerySteps(app)
declare(steps)
