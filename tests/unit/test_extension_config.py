"""Installing CelerySteps and declaring functions: every mistake is a clear ConfigurationError."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from celery_steps import (
    CancelOn,
    CelerySteps,
    Concurrency,
    ConfigurationError,
    Context,
    TriggerEvent,
)
from celery_steps.settings import resolve_store_url


def app_with(**conf: Any) -> Celery:
    app = Celery("cfg", set_as_current=False)
    app.conf.update(**conf)
    return app


@pytest.mark.parametrize(
    ("explicit", "conf", "expected"),
    [
        ("redis://arg/0", {"steps_store_url": "redis://setting/0"}, "redis://arg/0"),
        (None, {"steps_store_url": "memory://", "result_backend": "redis://b/1"}, "memory://"),
        (None, {"result_backend": "redis://backend/1", "broker_url": "redis://broker/0"},
         "redis://backend/1"),
        (None, {"result_backend": "rpc://", "broker_url": "rediss://broker/0"},
         "rediss://broker/0"),
        (None, {"broker_url": "redis+socket:///tmp/r.sock"}, "redis+socket:///tmp/r.sock"),
    ],
)
def test_the_store_url_comes_from_argument_setting_backend_then_broker(
    explicit: str | None, conf: dict[str, Any], expected: str
) -> None:
    assert resolve_store_url(explicit, app_with(**conf).conf) == expected


def test_no_usable_store_url_names_the_setting_to_set() -> None:
    app = app_with(broker_url="amqp://guest@localhost//", result_backend="rpc://")
    steps = CelerySteps(app)

    with pytest.raises(ConfigurationError, match="steps_store_url"):
        steps.send("t/x")


def test_django_style_settings_reach_the_extension() -> None:
    class Settings:
        CELERY_STEPS_STORE_URL = "memory://"
        CELERY_STEPS_EVENT_MAX_BYTES = 1234
        CELERY_STEPS_NAMESPACE = "shop"

    app = Celery("django-like", set_as_current=False)
    app.config_from_object(Settings, namespace="CELERY")
    steps = CelerySteps(app)

    assert steps.settings.event_max_bytes == 1234
    assert steps.settings.namespace == "shop"


def test_from_app_returns_the_installed_extension_and_installing_twice_fails() -> None:
    app = app_with(steps_store_url="memory://")
    steps = CelerySteps(app)

    assert CelerySteps.from_app(app) is steps
    with pytest.raises(ConfigurationError, match="already installed"):
        CelerySteps(app)
    with pytest.raises(ConfigurationError, match="no CelerySteps"):
        CelerySteps.from_app(Celery("bare", set_as_current=False))


def test_each_function_is_a_celery_task_named_after_its_id() -> None:
    app = app_with(steps_store_url="memory://")
    steps = CelerySteps(app)

    @steps.function(id="shop/import-images.v2", trigger="shop/product.imported", queue="images")
    def import_images(ctx: Context) -> None:
        return None

    task = app.tasks["celery_steps.fn.shop/import-images.v2"]
    assert task.acks_late is True and task.reject_on_worker_lost is True
    assert app.amqp.router.route({}, task.name)["queue"].name == "images"
    assert import_images.id == "shop/import-images.v2"


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"id": "has space", "trigger": "t/x"}, "function id"),
        ({"id": "", "trigger": "t/x"}, "function id"),
        ({"id": "x" * 129, "trigger": "t/x"}, "function id"),
        ({"id": "ok", "trigger": "bad name"}, "not a valid event name"),
        ({"id": "ok", "trigger": []}, "no trigger"),
        ({"id": "ok", "trigger": 42}, "must be an event name"),
        ({"id": "ok", "trigger": TriggerEvent("t/x", if_exp="event.data.x ==")}, "if_exp"),
        ({"id": "ok", "trigger": TriggerEvent("t/x", if_exp="(" * 40 + "1" + ")" * 40)},
         "nest"),
        ({"id": "ok", "trigger": "t/x", "retries": -1}, "retries"),
        ({"id": "ok", "trigger": "t/x", "cancel_on": [CancelOn("t/y", match="data.")]},
         "match"),
    ],
)
def test_bad_declarations_are_rejected_at_decoration_time(
    kwargs: dict[str, Any], problem: str
) -> None:
    steps = CelerySteps(app_with(steps_store_url="memory://"))

    with pytest.raises(ConfigurationError, match=problem):
        steps.function(**kwargs)(lambda ctx: None)


def test_a_duplicate_function_id_is_rejected() -> None:
    steps = CelerySteps(app_with(steps_store_url="memory://"))
    steps.function(id="dup", trigger="t/x")(lambda ctx: None)

    with pytest.raises(ConfigurationError, match="declared twice"):
        steps.function(id="dup", trigger="t/y")(lambda ctx: None)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"cancel_on": [CancelOn("t/y", if_exp="")]}, "if_exp of cancel_on.*empty"),
        ({"cancel_on": [CancelOn("t/y", if_exp="   ")]}, "empty"),
        ({"cancel_on": [CancelOn("t/y", match="")]}, "cancel_on.*match"),
        ({"cancel_on": [CancelOn("t/y", match="data.")]}, "cancel_on.*match"),
        ({"cancel_on": [CancelOn("t/y", match="event.data.id")]}, "cancel_on.*match"),
        ({"trigger": TriggerEvent("t/x", if_exp="")}, "if_exp.*empty"),
        ({"idempotency": ""}, "idempotency.*empty"),
        ({"concurrency": Concurrency(1, key="")}, "concurrency.key.*empty"),
    ],
)
def test_empty_or_invalid_expressions_are_refused_naming_the_function(
    kwargs: dict[str, Any], problem: str
) -> None:
    # given a function declaration with an empty or broken expression
    steps = CelerySteps(app_with(steps_store_url="memory://"))
    declaration = {"id": "named-fn", "trigger": "t/x", **kwargs}

    # then it is refused at decoration time, and the error names the function
    with pytest.raises(ConfigurationError, match=problem) as refused:
        steps.function(**declaration)(lambda ctx: None)
    assert "'named-fn'" in str(refused.value)


def test_a_sentinel_store_without_a_master_name_is_refused_saying_what_to_set() -> None:
    from celery_steps.store import open_store

    with pytest.raises(ConfigurationError, match="master_name"):
        open_store("sentinel://127.0.0.1:26379", options={})


def test_a_malformed_sentinel_url_is_refused() -> None:
    from celery_steps.store import open_store

    with pytest.raises(ConfigurationError, match="invalid sentinel URL"):
        open_store("sentinel://127.0.0.1:26379;redis://x", options={"master_name": "m"})


def test_the_store_takes_the_transport_options_of_the_broker_it_shares() -> None:
    from celery_steps.settings import store_transport_options

    # given a Sentinel broker whose master name is in Celery's broker options
    url = "sentinel://10.0.0.1:26379;sentinel://10.0.0.2:26379"
    app = app_with(broker_url=url, broker_transport_options={"master_name": "cluster-a"})

    # then the store, taken from the broker, uses them; its own setting wins when given
    assert resolve_store_url(None, app.conf) == url
    assert store_transport_options(url, app.conf) == {"master_name": "cluster-a"}
    app.conf.steps_store_transport_options = {"master_name": "steps-only"}
    assert store_transport_options(url, app.conf) == {"master_name": "steps-only"}
