"""The worker's own pool as the timer poller's first choice for due wake-ups: no broker.

The poller is a thread of the worker's main process. For what it claims and this worker has
room for (``steps_wake_local``), :class:`WorkerPool` builds the very task message the broker
would have delivered and hands it to the worker's consumer in the consumer's event loop
thread, where it takes the path of any delivered message: the same request, signals, time
limits, task events and pool. Only the broker's round trips are skipped (publish, fetch,
the unacked bookkeeping, ack). A handed message has no broker to ack to, so it is never
redelivered: what it carries is covered by the timers (a run's stays claimed for
``REDO_MS``; a routing's until the routing removes it), and a message that cannot be
delivered (the consumer stopped) is given back to the timers, due now.

It needs the consumer's event loop (the prefork, threads and solo pools on the Redis or
RabbitMQ transports); on a worker without one (eventlet, gevent) it has no room and the
poller publishes everything, as it did before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery, bootsteps, uuid
from celery.worker import state
from kombu.message import Message
from kombu.serialization import dumps

from celery_steps.functions import Registry
from celery_steps.integration.transport import BRANCH_TASK, ROUTE_TASK
from celery_steps.runtime import Runtime

log = logging.getLogger("celery_steps.poller")
LOCAL_ATTR = "_celery_steps_local_pool"


class _LocalChannel:
    """What a kombu message needs of a channel to be acked or rejected. Acking forgets the
    message; rejecting it with ``requeue`` (a task with ``reject_on_worker_lost`` whose pool
    process died) gives what it carried back to the timers, due now: the broker would have
    redelivered it."""

    no_ack_consumers = None

    def __init__(self, give_back: Callable[[list[str]], None]) -> None:
        self._give_back = give_back
        self._members: dict[str, list[str]] = {}

    def track(self, delivery_tag: str, members: list[str]) -> None:
        self._members[delivery_tag] = members

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        self._members.pop(delivery_tag, None)

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        members = self._members.pop(delivery_tag, None)
        if requeue and members:
            self._give_back(members)


class WorkerPool:
    """:class:`~celery_steps.runtime.ports.LocalPool` on this worker's consumer."""

    def __init__(self, app: Celery, runtime: Runtime, worker: Any) -> None:
        self.app = app
        self.runtime = runtime
        self.registry: Registry = runtime.registry
        self.worker = worker
        self._hub: Any = None
        self._handed: queue.SimpleQueue[tuple[Message, list[str]]] = queue.SimpleQueue()
        self._waiting = 0  # handed over, not delivered yet
        self._lock = threading.Lock()
        self._channel = _LocalChannel(self._give_back)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # -- the consumer's side (its event loop thread) ------------------------------------------
    def attach(self, hub: Any) -> None:
        """The consumer's event loop (re)started: deliver handed messages through it."""
        hub.add_reader(self._wake_r, self._deliver)
        self._hub = hub
        self._deliver()

    def detach(self) -> None:
        """The consumer stopped: take nothing more, give back what was not delivered."""
        hub, self._hub = self._hub, None
        if hub is not None:
            with contextlib.suppress(Exception):
                hub.remove_reader(self._wake_r)
        self._deliver()

    def close(self) -> None:
        self.detach()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _deliver(self, *args: Any) -> None:
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 4096):
                pass
        on_message = self._on_message()
        while True:
            try:
                message, members = self._handed.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                self._waiting -= 1
            if on_message is None:
                self._give_back(members)
                continue
            self._channel.track(message.delivery_tag, members)
            try:
                on_message(message)
            except Exception:  # never let it break the consumer's loop
                log.exception("could not start a wake-up task in this worker")
                self._channel.basic_reject(message.delivery_tag, requeue=True)

    def _give_back(self, members: list[str]) -> None:
        try:
            self.runtime.hand_back(members)
        except Exception:  # their claimed timers come due again after REDO_MS
            log.warning("could not give back %d wake-ups; their timers bring them back",
                        len(members), exc_info=True)

    def _on_message(self) -> Any:
        if self._hub is None:
            return None
        consumer = getattr(getattr(self.worker, "consumer", None), "task_consumer", None)
        return getattr(consumer, "on_message", None)

    # -- the poller's side --------------------------------------------------------------------
    def room(self) -> int:
        if self._on_message() is None or not self._queues():
            return 0  # not consuming yet: what it serves is not known
        size = getattr(self.worker.pool, "num_processes", None) or self.worker.concurrency
        return max(0, int(size) - len(state.reserved_requests) - self._waiting)

    def takes_run(self, function_id: str) -> bool:
        fn = self.registry.by_id.get(function_id)
        return fn is not None and self._consumes(fn.task_name, ())

    def takes_routes(self) -> bool:
        return self._consumes(ROUTE_TASK, ())

    def enqueue_run(self, function_id: str, run_id: str, *more: str,
                    priority: int | None = None) -> None:
        fn = self.registry.by_id[function_id]
        ids = [run_id, *more]
        self._hand(fn.task_name, ids, [f"r|{function_id}|{r}" for r in ids])

    def publish_route(self, event_id: str, *more: str) -> None:
        ids = [event_id, *more]
        self._hand(ROUTE_TASK, ids, [f"e|{e}" for e in ids])

    def send_branch(self, function_id: str, run_id: str, step_key: str) -> None:
        self._hand(BRANCH_TASK, [function_id, run_id, step_key],
                   [f"b|{function_id}|{run_id}|{step_key}"])

    def _queues(self) -> set[str]:
        """The queues this worker's consumer consumes from now (none while it starts)."""
        consumer = getattr(getattr(self.worker, "consumer", None), "task_consumer", None)
        return {q.name for q in list(getattr(consumer, "queues", None) or ())}

    def _consumes(self, name: str, args: Sequence[Any]) -> bool:
        """Whether the queue ``name`` is routed to is one this worker consumes from."""
        route = self.app.amqp.router.route({}, name, args, {})
        target = route.get("queue")
        return getattr(target, "name", target) in self._queues()

    def _hand(self, name: str, args: list[str], members: list[str]) -> None:
        if self._on_message() is None:
            raise RuntimeError("this worker's consumer is not running")
        message = self._message(name, args)
        with self._lock:
            self._waiting += 1
        self._handed.put((message, members))
        with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
            os.write(self._wake_w, b"\0")

    def _message(self, name: str, args: list[str]) -> Message:
        """The message ``apply_async`` would have published, as the consumer receives it."""
        task_id = uuid()
        task = self.app.tasks[name]
        built = self.app.amqp.as_task_v2(task_id, name, args=args, kwargs={},
                                         ignore_result=task.ignore_result)
        content_type, encoding, body = dumps(  # type: ignore[no-untyped-call]
            built.body, serializer=self.app.conf.task_serializer)
        return Message(  # type: ignore[no-untyped-call]
            body=body, delivery_tag=task_id, content_type=content_type,
            content_encoding=encoding, headers=built.headers, properties=built.properties,
            channel=self._channel, delivery_info={"exchange": "", "routing_key": "", "priority": 0,
                                             "redelivered": False})


def local_pool_of(worker: Any) -> WorkerPool | None:
    return getattr(worker, LOCAL_ATTR, None)


class LocalPoolStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Attaches the worker's :class:`WorkerPool` to every start of the consumer's loop."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def register_with_event_loop(self, c: Any, hub: Any) -> None:
        pool = local_pool_of(c.controller)
        if pool is not None:
            pool.attach(hub)

    def stop(self, c: Any) -> None:
        pool = local_pool_of(c.controller)
        if pool is not None:
            pool.detach()

    def shutdown(self, c: Any) -> None:
        self.stop(c)
