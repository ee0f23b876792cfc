"""HTTP basic auth for the whole app (pages, API and static files), when configured.

The credentials are compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

CHALLENGE = 'Basic realm="celery-steps", charset="UTF-8"'


def credentials_match(header: str | None, username: str, password: str) -> bool:
    """Whether an ``Authorization`` header carries exactly these credentials."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, sep, given = decoded.partition(b":")
    # both comparisons always run: no early exit that tells which part was wrong
    user_ok = hmac.compare_digest(user, username.encode())
    password_ok = hmac.compare_digest(given, password.encode())
    return bool(sep) and user_ok and password_ok


class BasicAuth:
    """ASGI middleware: 401 with a challenge unless the request has the credentials."""

    def __init__(self, app: ASGIApp, username: str, password: str) -> None:
        self.app = app
        self._username = username
        self._password = password

    def __repr__(self) -> str:  # never show the password
        return f"BasicAuth(username={self._username!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not credentials_match(
            Headers(scope=scope).get("authorization"), self._username, self._password
        ):
            response = PlainTextResponse("authentication required", status_code=401,
                                         headers={"WWW-Authenticate": CHALLENGE})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
