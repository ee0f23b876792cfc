"""The JSON API behind the pages: runs (filtered, paged), one run, one event, actions.

Runs and events are their models' ``model_dump(mode="json")``. Errors are
``{"error": message}`` with 400 (bad filter), 403 (CSRF), 404 (unknown id).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from celery_steps.dashboard import actions, queries
from celery_steps.dashboard.site import site
from celery_steps.extension import CelerySteps


def _runs(steps: CelerySteps, params: dict[str, str]) -> dict[str, Any]:
    flt = queries.parse_filter(params)
    page = queries.run_page(steps, flt, limit=queries.parse_limit(params.get("limit")),
                            before=params.get("before") or None)
    return {"runs": [r.model_dump(mode="json") for r in page.runs],
            "next_before": page.next_before}


async def runs(request: Request) -> Response:
    """``GET /api/runs?function=&status=&limit=&before=``: newest first; ``next_before`` is
    the cursor of the next page (null on the last)."""
    data = await run_in_threadpool(_runs, site(request).steps, dict(request.query_params))
    return JSONResponse(data)


async def run(request: Request) -> Response:
    found = await run_in_threadpool(site(request).steps.get_run, request.path_params["run_id"])
    return JSONResponse(found.model_dump(mode="json"))


async def event(request: Request) -> Response:
    info = await run_in_threadpool(site(request).steps.get_event,
                                   request.path_params["event_id"])
    return JSONResponse(info.model_dump(mode="json"))


async def cancel(request: Request) -> Response:
    result = await run_in_threadpool(actions.cancel_run, site(request).steps,
                                     request.path_params["run_id"])
    return JSONResponse(result)


async def replay(request: Request) -> Response:
    result = await run_in_threadpool(actions.replay_run, site(request).steps,
                                     request.path_params["run_id"])
    return JSONResponse(result, status_code=201)


async def _json_object(request: Request) -> dict[str, str]:
    body = await request.body()
    try:
        data = json.loads(body) if body.strip() else {}
    except ValueError:
        raise HTTPException(400, "the body is not valid JSON") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise HTTPException(400, 'the body must be a JSON object such as {"function": "f", '
                                 '"status": "failed"}')
    return data


async def bulk(request: Request) -> Response:
    """``POST /api/bulk/cancel`` or ``/api/bulk/replay`` with the filter as a JSON object."""
    name = request.path_params["action"]
    action = next((a for a in actions.ACTIONS if a == name), None)
    if action is None:
        raise HTTPException(404, f"no bulk action {name!r}: use cancel or replay")
    flt = queries.parse_filter(await _json_object(request))
    result = await run_in_threadpool(actions.bulk, site(request).steps, action, flt)
    return JSONResponse(result.as_dict())
