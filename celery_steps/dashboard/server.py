"""Serving the dashboard from the CLI: who may reach it, and uvicorn.

Nothing here imports the web stack at module level, so the CLI can refuse bad options and
name the missing extra in one line.
"""

from __future__ import annotations

import importlib.util
import ipaddress
from typing import TYPE_CHECKING

from celery_steps.errors import ConfigurationError

if TYPE_CHECKING:
    from celery_steps.extension import CelerySteps

EXTRA_MODULES = ("starlette", "jinja2", "uvicorn", "multipart")
INSTALL_HINT = "pip install 'celery-steps[dashboard]'"


def require_extras() -> None:
    """Raise :class:`ConfigurationError` naming the install command if a module is missing."""
    missing = [name for name in EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigurationError(
            f"the dashboard needs {', '.join(missing)}: {INSTALL_HINT}")


def is_loopback(address: str) -> bool:
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def parse_basic_auth(value: str | None) -> tuple[str, str] | None:
    """``USER:PASS`` as a pair; the password may contain ':'; None when not given."""
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ConfigurationError("--basic-auth must be USER:PASS, both non-empty")
    return user, password


def check_exposure(address: str, basic_auth: tuple[str, str] | None) -> None:
    """Refuse to serve on a non-loopback address without basic auth."""
    if basic_auth is None and not is_loopback(address):
        raise ConfigurationError(
            f"refusing to serve the dashboard on {address} without --basic-auth: anyone who "
            "can reach it could cancel and replay runs; add --basic-auth USER:PASS or use "
            "--address 127.0.0.1")


def serve(steps: CelerySteps, *, address: str, port: int,
          basic_auth: tuple[str, str] | None) -> None:
    """Serve the dashboard with uvicorn until interrupted."""
    require_extras()
    import uvicorn

    from celery_steps.dashboard.app import build_app

    app = build_app(steps, basic_auth=basic_auth)
    config = uvicorn.Config(app, host=address, port=port, log_level="info",
                            server_header=False, proxy_headers=False, lifespan="off")
    uvicorn.Server(config).run()
