"""Start django-celery-beat's DatabaseScheduler as ``celery beat -S ...`` would; print its rows.

``python -m tests.django.beat_db <sqlite path> <function ids, comma-separated>`` configures
Django (sqlite at that path, django_celery_beat installed, migrated), declares a cron function
per id, creates the scheduler of a beat service, sends ``beat_init`` as beat does before its
first tick, and prints the ``PeriodicTask`` rows named ``celery_steps.cron.*`` as JSON. It
runs in its own process because Django's settings are configured once per process.
"""

from __future__ import annotations

import json
import sys
from typing import Any

CRONS = {
    "report": ("*/15 9-17 * JAN-MAR MON-FRI", "Europe/Paris"),
    "nightly": ("30 2 * * *", "America/New_York"),
}


def main(db_path: str, function_ids: list[str]) -> dict[str, Any]:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["django_celery_beat"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": db_path}},
        USE_TZ=True,
        TIME_ZONE="UTC",
        CELERY_TIMEZONE="UTC",
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()
    from celery import Celery
    from celery.beat import Service
    from celery.signals import beat_init
    from django.core.management import call_command
    from django_celery_beat.models import PeriodicTask

    from celery_steps import CelerySteps, Context, TriggerCron

    call_command("migrate", verbosity=0)
    app = Celery("beat_db", set_as_current=True)
    app.conf.update(steps_store_url="memory://", timezone="UTC", result_expires=None)
    steps = CelerySteps(app)
    for fn_id in function_ids:
        cron, tz = CRONS[fn_id]

        @steps.function(id=fn_id, trigger=TriggerCron(cron, tz=tz))
        def handler(ctx: Context) -> None:
            return None

    service = Service(app, scheduler_cls="django_celery_beat.schedulers:DatabaseScheduler")
    service.scheduler  # noqa: B018 (beat creates it before beat_init: it copies beat_schedule)
    beat_init.send(sender=service)
    rows = {}
    for task in PeriodicTask.objects.filter(name__startswith="celery_steps.cron."):
        cron = task.crontab
        rows[task.name] = {
            "task": task.task, "enabled": task.enabled, "args": json.loads(task.args),
            "expire_seconds": task.expire_seconds,
            "crontab": None if cron is None else [cron.minute, cron.hour, cron.day_of_month,
                                                  cron.month_of_year, cron.day_of_week],
            "timezone": None if cron is None else str(cron.timezone),
            "shown": None if cron is None else str(cron),
        }
    scheduled = sorted(n for n in service.scheduler.schedule if n.startswith("celery_steps."))
    return {"rows": rows, "scheduled": scheduled}


if __name__ == "__main__":
    ids = [i for i in sys.argv[2].split(",") if i]
    print(json.dumps(main(sys.argv[1], ids)))
