"""Optional API keys: with ``IMGCOMPRESS_API_KEYS`` set, the API wants a bearer key.

Each key owns the requests it creates: another key gets 404 for them, as if they did not
exist. Requests are tagged with the key's fingerprint (a SHA-256 prefix), never the key.
Processed images stay reachable by their unguessable id alone (they are capability
URLs, so the output CSV's links work wherever it is sent); the page, health and
metrics endpoints are not behind keys.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from litestar import Request
from litestar.exceptions import NotAuthorizedException

from imgcompress_core import Imgcompress

__all__ = ["caller", "fingerprint"]


def fingerprint(key: str) -> str:
    """Return the stored identity of an API key."""
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def caller(request: Request[Any, Any, Any], ic: Imgcompress) -> str | None:
    """Return the caller's fingerprint, None when the API is open; 401 without a valid key."""
    keys = ic.settings.api_key_set()
    if not keys:
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
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
