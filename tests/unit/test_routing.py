"""`queue=` routes a function's task through `task_routes`, the Celery 6 way."""

from __future__ import annotations

import uuid
import warnings
from typing import Any

import pytest
import redis
from celery import Celery
from celery.exceptions import CDeprecationWarning

from celery_steps import CelerySteps, Context
from tests.conftest import RedisServer


def new_app(**conf: Any) -> Celery:
    app = Celery(f"routing_{uuid.uuid4().hex[:6]}", set_as_current=False)
    app.conf.update(steps_store_url="memory://", steps_timer_poller=False, **conf)
    return app


def declare(steps: CelerySteps, fn_id: str, queue: str | None) -> None:
    @steps.function(id=fn_id, trigger=f"t/{fn_id}", queue=queue)
    def handler(ctx: Context) -> None:
        return None


def queue_of(app: Celery, task_name: str, args: tuple[Any, ...] = ()) -> str:
    route = app.amqp.router.route({}, task_name, args, {})
    return str(route["queue"].name)


def test_a_declared_queue_routes_the_task_without_the_deprecated_task_attribute() -> None:
    app = new_app()
    steps = CelerySteps(app)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CDeprecationWarning)
        # when a function declares its queue and the app binds its task
        declare(steps, "images", "images")
        task = app.tasks["celery_steps.fn.images"]

    # then the task has no queue attribute of its own, and the router sends it to the queue
    assert "queue" not in type(task).__dict__
    assert queue_of(app, "celery_steps.fn.images") == "images"


def test_a_glob_in_task_routes_does_not_override_a_declared_queue() -> None:
    app = new_app(task_routes={"celery_steps.*": {"queue": "steps"}})
    steps = CelerySteps(app)
    declare(steps, "images", "images")
    declare(steps, "plain", None)

    assert queue_of(app, "celery_steps.fn.images") == "images"
    assert queue_of(app, "celery_steps.fn.plain") == "steps"
    assert queue_of(app, "celery_steps.route") == "steps"


def test_an_exact_task_routes_entry_overrides_a_declared_queue() -> None:
    app = new_app(task_routes=[{"celery_steps.fn.images": "big-images"},
                               {"celery_steps.*": "steps"}])
    steps = CelerySteps(app)
    declare(steps, "images", "images")

    assert queue_of(app, "celery_steps.fn.images") == "big-images"


def test_task_routes_set_after_the_extension_keep_the_declared_queue() -> None:
    # given routes configured after CelerySteps(app), as a Django settings module would
    app = new_app()
    steps = CelerySteps(app)
    declare(steps, "images", "images")
    app.conf.task_routes = {"celery_steps.*": "steps", "celery_steps.route": "routing"}
    app.finalize()

    assert queue_of(app, "celery_steps.fn.images") == "images"
    assert queue_of(app, "celery_steps.route") == "routing"
    assert queue_of(app, "celery_steps.branch", ("plain", "run_1", "a")) == "steps"


def test_the_parallel_branches_of_a_function_go_to_its_queue() -> None:
    app = new_app(task_default_queue="default")
    steps = CelerySteps(app)
    declare(steps, "images", "images")
    declare(steps, "plain", None)

    assert queue_of(app, "celery_steps.branch", ("images", "run_1", "a")) == "images"
    assert queue_of(app, "celery_steps.branch", ("plain", "run_1", "a")) == "default"


@pytest.mark.redis
def test_messages_land_in_the_declared_or_explicitly_routed_queue_on_a_real_broker(
    redis_server: RedisServer,
) -> None:
    db = 5
    client = redis.Redis.from_url(redis_server.url(db))
    client.flushdb()
    app = new_app(broker_url=redis_server.url(db),
                  task_routes={"celery_steps.*": {"queue": "steps"},
                               "celery_steps.fn.thumbs": {"queue": "fast-thumbs"}})
    steps = CelerySteps(app)
    declare(steps, "images", "images")
    declare(steps, "thumbs", "thumbs")

    # when the runs' tasks are published
    app.tasks["celery_steps.fn.images"].apply_async(args=["run_1"])
    app.tasks["celery_steps.fn.thumbs"].apply_async(args=["run_2"])

    # then each message waits in its queue's list: declared, or named for the exact task
    assert client.llen("images") == 1
    assert client.llen("fast-thumbs") == 1
    assert client.llen("thumbs") == client.llen("steps") == 0
