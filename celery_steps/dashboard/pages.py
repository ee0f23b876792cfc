"""The HTML pages: functions, runs, one run, one event, and the cancel/replay forms.

Reads go through :mod:`~celery_steps.dashboard.queries` in a worker thread (the store client
blocks); every POST route is wrapped by :func:`~celery_steps.dashboard.csrf.protect` in
:mod:`~celery_steps.dashboard.app`.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from celery_steps.dashboard import actions, formatting, queries
from celery_steps.dashboard.site import Site, redirect, run_link, site
from celery_steps.dashboard.timeline import build_timeline
from celery_steps.errors import RunNotFound
from celery_steps.extension import CelerySteps

REFRESH_SECONDS = 3
"""A page of a run that has not ended reloads itself this often."""
PREVIEW = 20


def _index(steps: CelerySteps) -> dict[str, Any]:
    functions = sorted(steps.functions.values(), key=lambda fn: (fn.internal, fn.id))
    rows = []
    for fn in functions:
        counts, more = queries.recent_status_counts(steps, fn.id)
        rows.append({**formatting.function_row(fn), "counts": counts, "more": more})
    return {"functions": rows, "statuses": queries.STATUSES, "recent": queries.RECENT}


async def index(request: Request) -> Response:
    s = site(request)
    return s.render(request, "index.html", await run_in_threadpool(_index, s.steps))


def _runs(steps: CelerySteps, params: dict[str, str]) -> dict[str, Any]:
    flt = queries.parse_filter(params)
    limit = queries.parse_limit(params.get("limit"))
    page = queries.run_page(steps, flt, limit=limit, before=params.get("before") or None)
    return {"filter": flt, "limit": limit, "page": page, "statuses": queries.STATUSES,
            "function_ids": sorted(steps.functions), "first_page": not params.get("before")}


async def runs(request: Request) -> Response:
    s = site(request)
    context = await run_in_threadpool(_runs, s.steps, dict(request.query_params))
    return s.render(request, "runs.html", context)


def _run(steps: CelerySteps, run_id: str) -> dict[str, Any]:
    run = steps.get_run(run_id)
    return {"run": run, "timeline": build_timeline(run, steps.clock.now())}


async def run(request: Request) -> Response:
    s = site(request)
    context = await run_in_threadpool(_run, s.steps, request.path_params["run_id"])
    if not context["run"].ended:
        context["refresh"] = REFRESH_SECONDS
    return s.render(request, "run.html", context)


def _event(steps: CelerySteps, event_id: str) -> dict[str, Any]:
    info = steps.get_event(event_id)
    started = []
    for run_id in info.run_ids:
        try:
            started.append({"id": run_id, "run": steps.get_run(run_id)})
        except RunNotFound:
            started.append({"id": run_id, "run": None})
    return {"info": info, "started": started}


async def event(request: Request) -> Response:
    s = site(request)
    context = await run_in_threadpool(_event, s.steps, request.path_params["event_id"])
    return s.render(request, "event.html", context)


# -- actions --------------------------------------------------------------------------------
async def cancel(request: Request) -> Response:
    s, run_id = site(request), request.path_params["run_id"]
    await run_in_threadpool(actions.cancel_run, s.steps, run_id)
    return redirect(request, run_link(run_id))


async def replay(request: Request) -> Response:
    s, run_id = site(request), request.path_params["run_id"]
    result = await run_in_threadpool(actions.replay_run, s.steps, run_id)
    return redirect(request, run_link(result["run_id"]))


def _action(request: Request) -> actions.Action:
    name = request.path_params["action"]
    for action in actions.ACTIONS:
        if name == action:
            return action
    raise HTTPException(404, f"no bulk action {name!r}: use cancel or replay")


def _preview(steps: CelerySteps, flt: queries.RunFilter) -> dict[str, Any]:
    selection = queries.select_runs(steps, flt)
    return {"filter": flt, "count": len(selection.runs), "truncated": selection.truncated,
            "preview": selection.runs[:PREVIEW], "limit": queries.BULK_LIMIT}


async def bulk_confirm(request: Request) -> Response:
    """The confirmation page: what the bulk action would touch, and the form that does it."""
    s, action = site(request), _action(request)
    flt = queries.parse_filter(request.query_params)
    context = await run_in_threadpool(_preview, s.steps, flt)
    return s.render(request, "bulk_confirm.html", {
        "action": action, "again": actions.again_reaches_the_rest(action, flt), **context})


async def bulk(request: Request) -> Response:
    s: Site = site(request)
    action = _action(request)
    form = await request.form()
    flt = queries.parse_filter({k: v for k, v in form.items() if isinstance(v, str)})
    result = await run_in_threadpool(actions.bulk, s.steps, action, flt)
    return s.render(request, "bulk_done.html", {
        "result": result, "again": actions.again_reaches_the_rest(action, flt)})
