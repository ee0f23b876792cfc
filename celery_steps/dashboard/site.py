"""What every handler shares: the extension, the templates, CSRF, and how a page renders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

from celery_steps.dashboard import formatting
from celery_steps.dashboard.csrf import FIELD, Csrf
from celery_steps.extension import CelerySteps


def _path_part(value: object) -> str:
    """A value as one URL path segment (a ``/`` or ``?`` in an id stays inside it)."""
    return quote(str(value), safe="")


def make_templates() -> jinja2.Environment:
    """The package's templates, autoescaped: every value is text, never markup."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("celery_steps.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(time=formatting.format_time, ms_time=formatting.format_ms,
                       json=formatting.pretty_json, part=_path_part,
                       query=lambda params: urlencode(params))
    env.globals.update(duration=formatting.format_duration, csrf_field=FIELD)
    return env


@dataclass
class Site:
    """Stored on ``app.state.site``; handlers reach it through :func:`site`."""

    steps: CelerySteps
    templates: jinja2.Environment
    csrf: Csrf

    def render(self, request: Request, name: str, context: dict[str, Any],
               status_code: int = 200) -> HTMLResponse:
        """A page, with the CSRF token its forms carry (and the cookie it is checked against)."""
        token, new_nonce = self.csrf.form_token(request)
        values = {"base": base(request), "csrf_token": token, "refresh": None, **context}
        html = self.templates.get_template(name).render(values)
        response = HTMLResponse(html, status_code=status_code)
        if new_nonce is not None:
            self.csrf.set_cookie(request, response, new_nonce)
        return response


def site(request: Request) -> Site:
    found: Site = request.app.state.site
    return found


def base(request: Request) -> str:
    """The path the app is mounted at ('' at the root): every link starts with it."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def route_path(request: Request) -> str:
    """The request path inside the app (without the mount prefix)."""
    path = request.url.path
    prefix = base(request)
    return path[len(prefix):] if prefix and path.startswith(prefix) else path


def redirect(request: Request, path: str) -> RedirectResponse:
    """303 See Other to ``path`` inside the app (after a form post)."""
    return RedirectResponse(base(request) + path, status_code=303)


def run_link(run_id: str) -> str:
    return "/runs/" + _path_part(run_id)
