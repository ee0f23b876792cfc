"""Cron triggers under django-celery-beat's DatabaseScheduler: the rows show the true schedule.

Each step runs ``tests/django/beat_db.py`` in its own process (Django is configured once per
process), against one sqlite database in a temporary directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django_celery_beat")
ROOT = Path(__file__).resolve().parents[2]


def start_beat(db: Path, *function_ids: str) -> dict[str, Any]:
    """Start a DatabaseScheduler with these cron functions declared; its rows and entries."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.django.beat_db", str(db), ",".join(function_ids)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_database_scheduler_rows_show_each_cron_and_its_time_zone(tmp_path: Path) -> None:
    # when beat starts with django-celery-beat and two cron functions
    found = start_beat(tmp_path / "beat.sqlite3", "report", "nightly")
    rows = found["rows"]

    # then the admin's rows hold the real crontab fields and the trigger's time zone
    report = rows["celery_steps.cron.report.0"]
    assert report["crontab"] == ["*/15", "9-17", "*", "1-3", "1-5"]
    assert report["timezone"] == "Europe/Paris"
    assert report["shown"] == "*/15 9-17 * 1-3 1-5 (m/h/dM/MY/d) Europe/Paris"
    nightly = rows["celery_steps.cron.nightly.0"]
    assert nightly["crontab"] == ["30", "2", "*", "*", "*"]
    assert nightly["timezone"] == "America/New_York"
    # and the tick still expires and names its function
    assert report["task"] == "celery_steps.cron" and report["args"] == ["report", 0]
    assert report["enabled"] is True and report["expire_seconds"] == 300
    assert found["scheduled"] == ["celery_steps.cron.nightly.0", "celery_steps.cron.report.0"]


def test_a_removed_function_loses_its_row_when_beat_starts(tmp_path: Path) -> None:
    db = tmp_path / "beat.sqlite3"
    start_beat(db, "report", "nightly")

    # when beat starts again after "nightly" was removed from the code
    found = start_beat(db, "report")

    # then its row is gone and beat does not schedule it; the other one stays
    assert sorted(found["rows"]) == ["celery_steps.cron.report.0"]
    assert found["scheduled"] == ["celery_steps.cron.report.0"]


def test_a_function_added_back_is_scheduled_again(tmp_path: Path) -> None:
    db = tmp_path / "beat.sqlite3"
    start_beat(db, "report", "nightly")
    start_beat(db, "report")

    found = start_beat(db, "report", "nightly")

    assert found["rows"]["celery_steps.cron.nightly.0"]["enabled"] is True
    assert "celery_steps.cron.nightly.0" in found["scheduled"]
