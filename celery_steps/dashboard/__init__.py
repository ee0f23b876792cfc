"""The web dashboard: see and fix runs (``celery -A proj steps dashboard``, docs/operating.md).

Needs the ``dashboard`` extra (Starlette, Jinja2, uvicorn, python-multipart). Importing this
package does not: the web modules load when :func:`create_app` is called, so the CLI can
check its options and say which extra is missing first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from celery_steps.dashboard.server import require_extras

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from celery_steps.extension import CelerySteps

__all__ = ["create_app"]


def create_app(steps: CelerySteps, *, basic_auth: tuple[str, str] | None = None,
               secret: bytes | None = None) -> Starlette:
    """The dashboard of ``steps`` as an ASGI application, to serve or mount anywhere.

    ``basic_auth`` = (user, password) guards every route. ``secret`` signs the forms' CSRF
    tokens (random per app by default; pass one when several processes serve the app).
    """
    require_extras()
    from celery_steps.dashboard.app import build_app

    return build_app(steps, basic_auth=basic_auth, secret=secret)
