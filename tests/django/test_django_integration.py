"""The Django integration, against the example project's ``shop`` app.

Django is configured lazily, in a fixture, with ``settings.configure`` (never at import
time), so the other tests of the same pytest process are untouched. The store is the
in-memory one and Celery runs tasks eagerly: no broker, no worker.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celery_steps import CelerySteps, InvalidEventError

EXAMPLE_PROJECT = Path(__file__).resolve().parents[2] / "example_project"
MAX_BYTES = 4096


@pytest.fixture(scope="module")
def steps() -> Iterator[CelerySteps]:
    """Django configured for the example project; yields the project's CelerySteps."""
    import django
    from django.conf import settings

    saved_env = os.environ.get("DJANGO_SETTINGS_MODULE")
    sys.path.insert(0, str(EXAMPLE_PROJECT))
    try:
        if not settings.configured:
            settings.configure(
                INSTALLED_APPS=[
                    "django.contrib.contenttypes",
                    "django.contrib.auth",
                    "celery_steps.contrib.django",
                    "shop",
                ],
                DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                                       "NAME": ":memory:"}},
                USE_TZ=True,
                DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
                CELERY_BROKER_URL="memory://",
                CELERY_RESULT_BACKEND="cache+memory://",
                CELERY_TASK_ALWAYS_EAGER=True,
                CELERY_STEPS_STORE_URL="memory://",
                CELERY_STEPS_EVENT_MAX_BYTES=MAX_BYTES,
                CELERY_STEPS_RETRY_BACKOFF_BASE=0.2,
                CELERY_STEPS_TIMER_POLLER=False,
            )
        django.setup()
        from proj.celery import steps as project_steps

        yield project_steps
    finally:
        sys.path.remove(str(EXAMPLE_PROJECT))
        if saved_env is None:
            os.environ.pop("DJANGO_SETTINGS_MODULE", None)
        else:
            os.environ["DJANGO_SETTINGS_MODULE"] = saved_env


def new_id() -> str:
    return f"test-{uuid.uuid4().hex}"


def order(order_id: int = 1) -> dict[str, Any]:
    return {"order_id": order_id, "email": "ada@example.com", "amount_cents": 4599,
            "items": [{"sku": "mug", "qty": 2}]}


def test_app_config_autodiscovers_steps_modules(steps: CelerySteps) -> None:
    from django.apps import apps

    from celery_steps.contrib.django.apps import CeleryStepsConfig

    config = apps.get_app_config("celery_steps")
    assert isinstance(config, CeleryStepsConfig)
    assert config.name == "celery_steps.contrib.django"
    assert "shop.steps" in sys.modules
    assert {"process-order", "loyalty-points"} <= set(steps.functions)
    assert "celery_steps.fn.process-order" in steps.app.tasks
    assert CelerySteps.from_app(steps.app) is steps


def test_celery_steps_settings_reach_the_extension(steps: CelerySteps) -> None:
    assert steps.app.conf.steps_event_max_bytes == MAX_BYTES
    assert steps.settings.event_max_bytes == MAX_BYTES
    assert steps.settings.retry_backoff_base == 0.2
    assert steps.settings.timer_poller is False
    assert steps.runtime.store.__class__.__name__ == "MemoryStore"


def test_send_on_commit_outside_a_transaction_sends_at_once(steps: CelerySteps) -> None:
    from celery_steps.contrib.django import send_on_commit

    event_id = new_id()
    assert send_on_commit(steps, "shop/order.paid", order(), id=event_id) == [event_id]
    assert steps.runtime.store.get_event(event_id) is not None
    runs = steps.runs_for_event(event_id, timeout=5)
    assert sorted(run.function_id for run in runs) == ["loyalty-points", "process-order"]


def test_send_on_commit_waits_for_the_commit(steps: CelerySteps) -> None:
    from django.db import transaction

    from celery_steps.contrib.django import send_on_commit

    event_id = new_id()
    with transaction.atomic():
        ids = send_on_commit(steps, "shop/order.paid", order(7), id=event_id)
        assert ids == [event_id]
        assert steps.runtime.store.get_event(event_id) is None
        assert steps.runtime.store.routed_runs(event_id) is None
    assert steps.runtime.store.get_event(event_id) is not None
    runs = steps.runs_for_event(event_id, timeout=5)
    assert sorted(run.function_id for run in runs) == ["loyalty-points", "process-order"]
    loyalty = next(run for run in runs if run.function_id == "loyalty-points")
    assert steps.wait_for_run(loyalty.id, timeout=5).output == {
        "order_id": 7, "email": "ada@example.com", "points": 45}


def test_send_on_commit_waits_for_the_outermost_commit(steps: CelerySteps) -> None:
    from django.db import transaction

    from celery_steps.contrib.django import send_on_commit

    event_id = new_id()
    with transaction.atomic():
        with transaction.atomic():
            send_on_commit(steps, "shop/order.paid", order(), id=event_id)
        assert steps.runtime.store.get_event(event_id) is None
    assert steps.runtime.store.get_event(event_id) is not None


def test_send_on_commit_sends_nothing_on_rollback(steps: CelerySteps) -> None:
    from django.db import transaction

    from celery_steps.contrib.django import send_on_commit

    event_id = new_id()
    with pytest.raises(RuntimeError), transaction.atomic():
        send_on_commit(steps, "shop/order.paid", order(), id=event_id)
        raise RuntimeError("payment record could not be saved")
    assert steps.runtime.store.get_event(event_id) is None
    assert steps.runs_for_event(event_id, timeout=0.05) == []


def test_send_on_commit_uses_the_given_database_alias(steps: CelerySteps) -> None:
    from django.db import connections, transaction

    from celery_steps.contrib.django import send_on_commit

    event_id = new_id()
    with transaction.atomic(using="default"):
        send_on_commit(steps, "shop/order.paid", order(), id=event_id, using="default")
        assert len(connections["default"].run_on_commit) == 1
        assert steps.runtime.store.get_event(event_id) is None
    assert steps.runtime.store.get_event(event_id) is not None


def test_send_on_commit_accepts_event_objects_and_lists(steps: CelerySteps) -> None:
    from django.db import transaction

    from celery_steps import Event
    from celery_steps.contrib.django import send_on_commit

    first, second = new_id(), new_id()
    events = [Event(name="shop/order.paid", data=order(1), id=first),
              {"name": "shop/order.paid", "data": order(2), "id": second}]
    with transaction.atomic():
        assert send_on_commit(steps, events) == [first, second]
    assert steps.runtime.store.get_event(first) is not None
    assert steps.runtime.store.get_event(second) is not None


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("",), {}, "no name"),
        (("shop/order.paid", {"blob": "x" * MAX_BYTES}), {}, "over the limit"),
        (("shop/order.paid", {"when": object()}), {}, "not JSON"),
        (("celery_steps/function.failed",), {}, "reserved prefix"),
        ((42,), {}, "cannot send int"),
        (([],), {}, "empty"),
    ],
)
def test_bad_events_raise_at_the_call_site(steps: CelerySteps, args: tuple[Any, ...],
                                           kwargs: dict[str, Any], message: str) -> None:
    from django.db import connection, transaction

    from celery_steps.contrib.django import send_on_commit

    with transaction.atomic():
        with pytest.raises(InvalidEventError, match=message):
            send_on_commit(steps, *args, **kwargs)
        assert connection.run_on_commit == []
