"""The dashboard's ASGI application: routes, middleware and error pages."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from celery_steps.dashboard import api, pages
from celery_steps.dashboard.auth import BasicAuth
from celery_steps.dashboard.csrf import Csrf, Endpoint, protect
from celery_steps.dashboard.headers import SecurityHeaders
from celery_steps.dashboard.queries import BadQuery
from celery_steps.dashboard.site import Site, make_templates, route_path, site
from celery_steps.errors import CeleryStepsError, EventNotFound, RunNotFound
from celery_steps.extension import CelerySteps

MAX_BODY = 64 * 1024


def routes(csrf: Csrf) -> list[BaseRoute]:
    def post(path: str, endpoint: Endpoint) -> Route:
        return Route(path, protect(csrf, endpoint), methods=["POST"])

    return [
        Route("/", pages.index),
        Route("/runs", pages.runs),
        Route("/bulk/{action}", pages.bulk_confirm),
        post("/bulk/{action}", pages.bulk),
        post("/runs/{run_id:path}/cancel", pages.cancel),
        post("/runs/{run_id:path}/replay", pages.replay),
        Route("/runs/{run_id:path}", pages.run),
        Route("/events/{event_id:path}", pages.event),
        Route("/api/runs", api.runs),
        post("/api/bulk/{action}", api.bulk),
        post("/api/runs/{run_id:path}/cancel", api.cancel),
        post("/api/runs/{run_id:path}/replay", api.replay),
        Route("/api/runs/{run_id:path}", api.run),
        Route("/api/events/{event_id:path}", api.event),
        Mount("/static", StaticFiles(packages=[("celery_steps.dashboard", "static")]),
              name="static"),
    ]


def _error(request: Request, status: int, message: str) -> Response:
    if route_path(request).startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)
    return site(request).render(request, "error.html",
                                {"status": status, "message": message}, status_code=status)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code)
    return _error(request, exc.status_code, str(exc.detail))


async def on_steps_error(request: Request, exc: Exception) -> Response:
    status = 404 if isinstance(exc, (RunNotFound, EventNotFound)) else 400
    return _error(request, status, str(exc))


def build_app(steps: CelerySteps, *, basic_auth: tuple[str, str] | None = None,
              secret: bytes | None = None) -> Starlette:
    """See :func:`celery_steps.dashboard.create_app`."""
    csrf = Csrf(secret)
    middleware = [Middleware(SecurityHeaders)]
    if basic_auth is not None:
        middleware.append(Middleware(BasicAuth, username=basic_auth[0], password=basic_auth[1]))
    app = Starlette(
        routes=routes(csrf),
        middleware=middleware,
        exception_handlers={HTTPException: on_http_error, CeleryStepsError: on_steps_error,
                            BadQuery: on_steps_error},
        max_body_size=MAX_BODY,
    )
    app.state.site = Site(steps=steps, templates=make_templates(), csrf=csrf)
    return app
