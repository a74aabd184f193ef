"""Map the core's errors to RFC 9457 problem details (``application/problem+json``).

Each problem has ``type`` (a stable URN built from the error's code), ``title``,
``status``, ``detail`` and ``code``; a bad CSV adds ``problems``, a list of
``{"row", "column", "reason"}``.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsException
from litestar.types import ExceptionHandlersMap

from imgcompress_core.errors import (
    IdempotencyConflict,
    ImgCompressError,
    InvalidPolicy,
    InvalidWebhookUrl,
    ManifestError,
    NotFound,
    RequestNotFinished,
    StorageUnavailable,
    UploadTooLarge,
)

__all__ = ["exception_handlers", "problem_details_config", "to_problem"]

log = logging.getLogger("imgcompress.web")

# The first matching class wins, so a subclass comes before its parent. Of the
# StorageErrors only StorageUnavailable (and worker_down, raised as one) is a 503; the
# others (storage_error, lease_lost, ...) are not the client's to retry and answer 500.
_STATUS: list[tuple[type[ImgCompressError], int, str]] = [
    (UploadTooLarge, 413, "Upload too large"),
    (ManifestError, 400, "The CSV cannot be accepted"),
    (InvalidWebhookUrl, 400, "The webhook URL cannot be accepted"),
    (InvalidPolicy, 400, "The output options cannot be accepted"),
    (NotFound, 404, "Not found"),
    (RequestNotFinished, 409, "Not finished yet"),
    (IdempotencyConflict, 422, "Idempotency-Key reused"),
    (StorageUnavailable, 503, "Storage unavailable"),
]


def to_problem(exc: ImgCompressError) -> ProblemDetailsException:
    """Return the problem-details exception for one of the core's errors."""
    status, title = 500, "Internal error"
    for kind, kind_status, kind_title in _STATUS:
        if isinstance(exc, kind):
            status, title = kind_status, kind_title
            break
    extra: dict[str, Any] = {"code": exc.code}
    if isinstance(exc, InvalidPolicy):
        extra["field"] = exc.field
    if isinstance(exc, ManifestError):
        extra["problems"] = [
            {"row": p.row, "column": p.column, "reason": p.reason} for p in exc.problems
        ]
    headers = {"Retry-After": "5"} if status in (409, 503) else None
    if status == 500:
        log.error("unexpected core error: %s", exc, exc_info=exc)
    return ProblemDetailsException(
        status_code=status,
        title=title,
        detail=exc.message,
        type_=f"urn:imgcompress:problem:{exc.code}",
        extra=extra,
        headers=headers,
    )


def _http_problem(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    extra = exc.extra if isinstance(exc.extra, dict) else {}
    if exc.extra and not isinstance(exc.extra, dict):
        extra = {"errors": exc.extra}
    status = exc.status_code
    code = f"http_{status}"
    if status in (408, 413):
        code = "request_timeout" if status == 408 else "request_too_large"
    if status == 400 and "too large" in exc.detail.lower():
        # Litestar says "Request Entity Too Large" with a 400 when the multipart parser hit
        # a limit; the parser's own exception (the context) says which one.
        status, code = 413, "too_many_form_parts"
        if "header" in str(exc.__context__).lower():  # "Maximum segment header length ..."
            code = "form_part_header_too_large"
    problem = ProblemDetailsException(
        status_code=status,
        title=exc.detail,
        detail=exc.detail,
        type_=f"urn:imgcompress:problem:{code}",
        headers=exc.headers,
        extra={"code": code, **extra},
    )
    return problem.to_response(request)


def _undecodable(request: Request[Any, Any, Any], exc: UnicodeDecodeError) -> Response[Any]:
    problem = ProblemDetailsException(
        status_code=400,
        title="The form cannot be read",
        detail="a form field is not valid UTF-8 text",
        type_="urn:imgcompress:problem:invalid_form",
        extra={"code": "invalid_form"},
    )
    return problem.to_response(request)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    problem = ProblemDetailsException(
        status_code=500,
        title="Internal error",
        detail="an unexpected error occurred; it has been logged",
        type_="urn:imgcompress:problem:internal_error",
        extra={"code": "internal_error"},
    )
    return problem.to_response(request)


def problem_details_config() -> ProblemDetailsConfig:
    """Return the ProblemDetailsPlugin configuration for the core's errors."""
    return ProblemDetailsConfig(exception_to_problem_detail_map={ImgCompressError: to_problem})


def exception_handlers() -> ExceptionHandlersMap:
    """Return handlers that turn framework errors and surprises into problem details."""
    return {
        HTTPException: _http_problem,
        UnicodeDecodeError: _undecodable,
        Exception: _unexpected,
    }
