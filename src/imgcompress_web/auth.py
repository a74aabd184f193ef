"""Optional API keys: with ``IMGCOMPRESS_API_KEYS`` set, the API wants a bearer key.

Each key owns the requests it creates: another key gets 404 for them, as if they did not
exist. Requests are tagged with the key's fingerprint (a SHA-256 prefix), never the key.
Processed images stay reachable by their unguessable id alone (they are capability
URLs, so the output CSV's links work wherever it is sent); the page, health and
metrics endpoints are not behind keys.

A handler behind keys takes the guard :func:`require_api_key` and the dependency
``owner`` (:func:`provide_owner`). The guard checks the key before Litestar reads the
body (an upload without a valid key is refused before its multipart body is parsed) and
remembers the caller; the dependency hands that caller to the handler.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import BaseRouteHandler

from imgcompress_core import Imgcompress

__all__ = ["caller", "fingerprint", "provide_owner", "require_api_key"]

_OWNER = "imgcompress_owner"  # where the guard leaves the caller, in the request's state


def fingerprint(key: str) -> str:
    """Return the stored identity of an API key."""
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def caller(connection: ASGIConnection[Any, Any, Any, Any], keys: frozenset[str]) -> str | None:
    """Return the caller's fingerprint, None when the API is open; 401 without a valid key."""
    if not keys:
        return None
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    token = token.strip()
    valid = scheme.lower() == "bearer" and any(
        hmac.compare_digest(token.encode(), key.encode()) for key in keys
    )
    if not valid:
        raise NotAuthorizedException(
            "this API needs an API key: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": 'Bearer realm="imgcompress"'},
        )
    return fingerprint(token)


def _keys(connection: ASGIConnection[Any, Any, Any, Any]) -> frozenset[str]:
    ic: Imgcompress = connection.app.state.imgcompress
    return ic.settings.api_key_set()


def require_api_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: 401 unless the request has a valid key (when keys are on), before its body
    is read; remember the caller for ``owner``."""
    connection.state[_OWNER] = caller(connection, _keys(connection))


def provide_owner(request: Request[Any, Any, Any]) -> str | None:
    """The ``owner`` dependency: the caller's fingerprint, None when the API is open."""
    if _OWNER not in request.state:  # a handler without the guard: check the key now
        request.state[_OWNER] = caller(request, _keys(request))
    owner: str | None = request.state[_OWNER]
    return owner
