"""The runtime's transport port on Celery: every message celery-steps publishes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from celery import Celery, states
from celery.backends.base import DisabledBackend
from kombu.exceptions import OperationalError

from celery_steps.errors import ConfigurationError, error_dict
from celery_steps.functions import TASK_PREFIX, Registry

ROUTE_TASK = "celery_steps.route"
BRANCH_TASK = "celery_steps.branch"
CRON_TASK = "celery_steps.cron"
TASK_DONE = "celery_steps.task_done"
TASK_FAILED = "celery_steps.task_failed"
AMQP_DRIVERS = ("amqp", "pyamqp", "librabbitmq")


def broker_priority(seconds: int, driver: str | None) -> int | None:
    """The message priority for a run of priority ``seconds`` (-600..600) on this broker.

    Redis (kombu's priority steps 0, 3, 6, 9; 0 is served first, and is where messages
    without a priority go): above 0 s -> 0, 0 s -> 3, down to -300 s -> 6, below -> 9.
    RabbitMQ (queues declared with ``x-max-priority`` 9 or more; higher is served first):
    ``5 + round(seconds * 4 / 600)``, 1 to 9. Other brokers: none.
    """
    if driver == "redis":
        return 0 if seconds > 0 else 3 if seconds == 0 else 6 if seconds >= -300 else 9
    if driver in AMQP_DRIVERS:
        return 5 + round(seconds * 4 / 600)
    return None


def task_failure_outcome(exc: BaseException, *, traceback: str | None = None) -> dict[str, Any]:
    """What a ``run_task`` task's failure means for its step: ``failed`` with the error, or
    ``lost`` when Celery failed it for the broker being unreachable (the task's own code may
    have succeeded: Celery fails a task whose callbacks it could not publish); the step then
    sends it again, as it does a lost message."""
    if isinstance(exc, OperationalError):
        return {"status": "lost"}
    return {"status": "failed", "error": error_dict(exc, traceback=traceback)}


class CeleryPublisher:
    """Publishes through ``app``; with a ``producer``, every message reuses it."""

    def __init__(self, app: Celery, registry: Registry, producer: Any = None) -> None:
        self.app = app
        self.registry = registry
        self.producer = producer
        self._driver: str | None = None

    def publish_route(self, event_id: str, *more: str) -> None:
        self.app.tasks[ROUTE_TASK].apply_async(args=[event_id, *more], producer=self.producer)

    def enqueue_run(self, function_id: str, run_id: str, *more: str,
                    priority: int | None = None) -> None:
        fn = self.registry.by_id.get(function_id)
        name = fn.task_name if fn else TASK_PREFIX + function_id
        options: dict[str, Any] = {"producer": self.producer}
        if priority is not None:
            level = broker_priority(priority, self.driver)
            if level is not None:
                options["priority"] = level
        task = self.app.tasks.get(name)
        if task is not None:
            task.apply_async(args=[run_id, *more], **options)
        else:  # a function served by another app on the same store
            self.app.send_task(name, args=[run_id, *more], **options)

    @property
    def driver(self) -> str:
        """The broker's kombu driver type (``redis``, ``amqp``...), looked up once."""
        if self._driver is None:
            try:
                self._driver = str(self.app.connection_for_write().transport.driver_type)
            except Exception:  # a transport whose client library is missing: no priority
                self._driver = ""
        return self._driver

    def send_branch(self, function_id: str, run_id: str, step_key: str) -> None:
        self.app.tasks[BRANCH_TASK].apply_async(args=[function_id, run_id, step_key],
                                                producer=self.producer)


class CeleryTransport(CeleryPublisher):
    """:class:`~celery_steps.runtime.ports.Transport` on a Celery app."""

    def inline(self) -> bool:
        return bool(self.app.conf.task_always_eager)

    @contextmanager
    def batch(self) -> Iterator[CeleryPublisher]:
        """One broker producer for many messages (eager mode publishes nothing)."""
        if self.app.conf.task_always_eager:
            yield self
            return
        with self.app.producer_or_acquire() as producer:
            publisher = CeleryPublisher(self.app, self.registry, producer)
            publisher._driver = self.driver
            yield publisher

    def task_result(self, task_id: str) -> dict[str, Any] | None:
        """Read the result backend, if the app has one that stored this task's result."""
        if isinstance(self.app.backend, DisabledBackend):
            return None
        result = self.app.AsyncResult(task_id)
        state = result.state
        if state == states.SUCCESS:
            return {"status": "completed", "result": result.result}
        if state in states.PROPAGATE_STATES:
            return task_failure_outcome(result.result)
        return None

    def send_task(self, task: Any, args: Sequence[Any], kwargs: dict[str, Any], *,
                  task_id: str, reply_to: tuple[str, str, str]) -> None:
        if isinstance(task, str):
            task = self.app.tasks.get(task) or self.app.signature(task)
        if not hasattr(task, "apply_async"):
            raise ConfigurationError(f"run_task needs a Celery task, got {type(task).__name__}")
        done = self.app.signature(TASK_DONE, args=reply_to, immutable=False)
        failed = self.app.signature(TASK_FAILED, args=reply_to)
        task.apply_async(args=list(args), kwargs=dict(kwargs), task_id=task_id, link=done,
                         link_error=failed)
