"""Cross-site request forgery: what a state-changing request must show to be accepted.

Every POST route is wrapped by :func:`protect`, which refuses with 403:

- a request the browser marks as cross-site (``Sec-Fetch-Site``) or whose ``Origin`` is not
  this host;
- a form post whose ``csrf_token`` field does not match the signed double-submit cookie
  (the token is an HMAC of the cookie's random nonce under a per-app secret);
- any other body type. A JSON request (``Content-Type: application/json``) needs no token:
  a plain cross-site HTML form cannot send one, and a script on another site cannot either
  without a CORS preflight, which this app never grants.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

COOKIE = "steps_csrf"
FIELD = "csrf_token"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
PROTECTED = "_steps_csrf_protected"
Endpoint = Callable[[Request], Awaitable[Response]]


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


class Csrf:
    """Issues and checks form tokens under one secret (random per app unless given)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def token_for(self, nonce: str) -> str:
        return hmac.new(self._secret, nonce.encode(), hashlib.sha256).hexdigest()

    def form_token(self, request: Request) -> tuple[str, str | None]:
        """The token a page's forms carry, and a new cookie nonce to set (None: keep it)."""
        nonce = request.cookies.get(COOKIE, "")
        if len(nonce) < 32:
            fresh = secrets.token_urlsafe(32)
            return self.token_for(fresh), fresh
        return self.token_for(nonce), None

    def set_cookie(self, request: Request, response: Response, nonce: str) -> None:
        response.set_cookie(COOKIE, nonce, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https",
                            path=request.scope.get("root_path") or "/")

    async def check(self, request: Request) -> None:
        """Return when the request may change state; raise HTTPException(403) otherwise."""
        if request.headers.get("sec-fetch-site", "").lower() in ("cross-site", "same-site"):
            raise HTTPException(403, "cross-site request refused")
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc.lower() != (
            request.headers.get("host", "").lower()
        ):
            raise HTTPException(403, "request from another origin refused")
        media = _media_type(request)
        if media == "application/json":
            return
        if media in FORM_TYPES:
            form = await request.form()
            token = form.get(FIELD)
            nonce = request.cookies.get(COOKIE, "")
            if isinstance(token, str) and nonce and hmac.compare_digest(
                token.encode(), self.token_for(nonce).encode()
            ):
                return
            raise HTTPException(403, "missing or invalid CSRF token: reload the page and retry")
        raise HTTPException(
            403, "state-changing requests must be JSON (Content-Type: application/json) or "
                 "a dashboard form")


def protect(csrf: Csrf, endpoint: Endpoint) -> Endpoint:
    """``endpoint`` behind :meth:`Csrf.check`; every POST route of the app is built this way."""

    async def guarded(request: Request) -> Response:
        await csrf.check(request)
        return await endpoint(request)

    setattr(guarded, PROTECTED, True)
    guarded.__name__ = endpoint.__name__
    return guarded
