"""Queues declared with ``@steps.function(queue=...)``, applied as a ``task_routes`` router.

Celery 6 drops the ``Task.queue`` attribute; routing belongs in ``task_routes``. The extension
puts one :class:`FunctionQueues` router first in ``app.conf.task_routes`` (kept there when
configuration replaces the setting). It routes ``celery_steps.fn.<id>``, and the parallel
branches of that function (``celery_steps.branch``), to the function's declared queue, so a
glob such as ``"celery_steps.*"`` does not override a declaration. An entry of ``task_routes``
naming the exact task (``"celery_steps.fn.<id>"`` or ``"celery_steps.branch"``) still wins:
the router steps aside for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from celery import Celery

from celery_steps.functions import TASK_PREFIX, Registry
from celery_steps.integration.transport import BRANCH_TASK


class FunctionQueues:
    """A Celery router: a function's tasks go to the queue it declared."""

    def __init__(self, app: Celery, registry: Registry) -> None:
        self.app = app
        self.registry = registry

    def __call__(self, name: str, args: Sequence[Any] | None = None, kwargs: Any = None,
                 options: Any = None, task: Any = None, **kw: Any) -> dict[str, str] | None:
        if name.startswith(TASK_PREFIX):
            function_id = name[len(TASK_PREFIX):]
        elif name == BRANCH_TASK and args:
            function_id = str(args[0])
        else:
            return None
        fn = self.registry.by_id.get(function_id)
        if fn is None or not fn.queue or name in explicit_routes(self.app.conf.task_routes):
            return None
        return {"queue": fn.queue}


def explicit_routes(routes: Any) -> set[str]:
    """The task names ``task_routes`` routes by exact name (not by glob or regex)."""
    names: set[str] = set()
    for route in _as_list(routes):
        pairs: Iterable[Any] = ()
        if isinstance(route, Mapping):
            pairs = route.items()
        elif isinstance(route, (list, tuple)):
            pairs = route
        for pair in pairs:
            if isinstance(pair, (list, tuple)) and len(pair) == 2:
                key = pair[0]
                if isinstance(key, str) and "*" not in key:
                    names.add(key)
    return names


def _as_list(routes: Any) -> list[Any]:
    if routes is None:
        return []
    if isinstance(routes, (list, tuple)):
        return list(routes)
    return [routes]


def install_router(app: Celery, registry: Registry) -> None:
    """Put this app's :class:`FunctionQueues` first in ``task_routes`` (once)."""
    routes = _as_list(app.conf.task_routes)
    if routes and isinstance(routes[0], FunctionQueues) and routes[0].app is app:
        return
    others = [r for r in routes if not isinstance(r, FunctionQueues)]
    app.conf.task_routes = [FunctionQueues(app, registry), *others]
