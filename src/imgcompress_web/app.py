"""The Litestar service: the HTTP API, the upload page, health, and OpenAPI at /schema.

``create_app(settings)`` builds the app; its lifespan opens the store and, unless
``run_worker`` is off, runs a worker in the same process. Handlers are thin: they parse
the request, call one method of the ``Imgcompress`` facade (never its store or service
directly), and let the core's errors become problem details. The API's handlers take
the caller as the ``owner`` dependency, checked by the ``require_api_key`` guard.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Litestar, Request, Response, delete, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency, Provide
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery, Parameter
from litestar.plugins.problem_details import ProblemDetailsPlugin
from litestar.response import Stream
from litestar.status_codes import HTTP_202_ACCEPTED

from imgcompress_core import Imgcompress, OutputPolicy, Settings, Urls
from imgcompress_core.errors import (
    IdempotencyConflict,
    InvalidPolicy,
    InvalidWebhookUrl,
    ManifestError,
    ManifestProblem,
)
from imgcompress_core.policy import POLICY_FIELDS, parse_policy

from .auth import provide_owner, require_api_key
from .feeds import feed_handlers
from .metrics import PrometheusMetrics, metrics_endpoint
from .pages import page_handlers
from .problems import exception_handlers, problem_details_config
from .schema import openapi_config
from .security import body_timeout, security_headers, trusted_host_check

__all__ = ["create_app"]

# Room for the multipart envelope and the webhook field around the CSV itself.
_MULTIPART_OVERHEAD = 64 * 1024
DEFAULT_PAGE = 100  # products per status page, unless ?limit= says otherwise
MAX_PAGE = 200
_IMAGE_CACHE = "public, max-age=31536000, immutable"


_UPLOAD_BODY = Body(
    media_type=RequestEncodingType.MULTI_PART,
    title="UploadForm",
    description="multipart/form-data: `file`, the CSV (a file part), an optional "
    "`webhook_url` (a text part), and optional output options as text parts: `format`, "
    "`quality`, `target_quality`, `max_bytes`, `max_width`, `max_height`, `background`, "
    "`metadata`, `preset` (see docs/compression.md)",
)


@dataclass
class Accepted:
    """The answer to an accepted upload."""

    requestId: str


def _urls(request: Request[Any, Any, Any], settings: Settings) -> Urls:
    if settings.public_url:
        return Urls(settings.base_url())
    return Urls(str(request.base_url).rstrip("/"))


def _request_urls(request: Request[Any, Any, Any], ic: Imgcompress, stored_base: str) -> Urls:
    """Links for one request: the base URL it was uploaded under, else this one."""
    return Urls(stored_base) if stored_base else _urls(request, ic.settings)


def _matches(if_none_match: str | None, etag: str) -> bool:
    """Return True if an If-None-Match header names this ETag (weak or strong) or is *."""
    if not if_none_match:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _ic(request: Request[Any, Any, Any]) -> Imgcompress:
    ic: Imgcompress = request.app.state.imgcompress
    return ic


_KEYED = [require_api_key]  # the guard of every handler behind API keys


@post(
    "/api/upload",
    status_code=HTTP_202_ACCEPTED,
    summary="Upload a CSV of image URLs",
    guards=_KEYED,
)
async def upload(
    request: Request[Any, Any, Any],
    ic: NamedDependency[Imgcompress],
    owner: NamedDependency[str | None],
    data: Annotated[dict[str, Any], _UPLOAD_BODY],
) -> Accepted:
    """Validate the CSV, store the request, and answer with its id at once."""
    file = data.get("file")
    if not isinstance(file, UploadFile):
        if file is None:
            reason = "the form has no part named 'file'"
        elif isinstance(file, list):
            reason = f"the form has {len(file)} parts named 'file'; it must have exactly one"
        else:
            reason = "the form field 'file' must be a file part (curl: -F file=@products.csv)"
        raise ManifestError([ManifestProblem(reason, column="file")], code="invalid_form")
    webhook = data.get("webhook_url")
    if isinstance(webhook, list):
        raise InvalidWebhookUrl(f"the form has {len(webhook)} webhook_url fields; give one")
    if webhook is not None and not isinstance(webhook, str):
        raise InvalidWebhookUrl("webhook_url must be a text field, not a file")
    policy = _policy(data)
    content = await file.read()
    base = _urls(request, ic.settings).base
    key = request.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= 255:
        raise IdempotencyConflict("an Idempotency-Key must be 1 to 255 characters")
    request_id = await ic.submit(
        content, webhook, base_url=base, idempotency_key=key, owner=owner, policy=policy
    )
    request.app.state.metrics.request_accepted()
    return Accepted(requestId=request_id)


def _policy(data: dict[str, Any]) -> OutputPolicy:
    """The output policy from the form's optional text fields (InvalidPolicy names a bad
    one: the 400 says which)."""
    fields: dict[str, str | None] = {}
    for name in POLICY_FIELDS:
        value = data.get(name)
        if isinstance(value, list):
            raise InvalidPolicy(name, f"the form has {len(value)} {name} fields; give one")
        if value is not None and not isinstance(value, str):
            raise InvalidPolicy(name, "must be a text field, not a file")
        fields[name] = value
    return parse_policy(fields)


@get(
    "/api/status/{request_id:str}",
    summary="A request's status and per-image detail",
    guards=_KEYED,
)
async def status(
    request: Request[Any, Any, Any],
    ic: NamedDependency[Imgcompress],
    owner: NamedDependency[str | None],
    request_id: FromPath[str],
    products: FromQuery[bool] = True,
    limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
    cursor: Annotated[int, Parameter(ge=0)] = 0,
) -> dict[str, Any]:
    """Return the status, progress counts and one page of products with their images:
    ``limit`` products (default 100, at most 200) after ``cursor`` (the ``nextCursor`` of
    the page before; absent on the last page). ``?products=false``: without the products, a
    cheap poll for a large request."""
    report = await ic.status(
        request_id, owner=owner, detail=products, after_row=cursor, limit=limit
    )
    return report.to_document(_request_urls(request, ic, report.request.base_url))


@get(
    "/api/requests/{request_id:str}/output.csv",
    media_type="text/csv",
    summary="The output CSV (409 while the request is still Pending)",
    guards=_KEYED,
)
async def output_csv(
    request: Request[Any, Any, Any],
    ic: NamedDependency[Imgcompress],
    owner: NamedDependency[str | None],
    request_id: FromPath[str],
) -> Stream:
    """Return the input CSV with an added Output Image Urls column."""
    base = _urls(request, ic.settings).base  # for a request stored without its own
    chunks = await ic.stream_output_csv(request_id, owner=owner, base_url=base)
    return Stream(
        chunks,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{request_id}-output.csv"'},
    )


@get("/api/images/{image_id:str}", summary="A processed image", media_type="image/jpeg")
async def image(
    request: Request[Any, Any, Any], ic: NamedDependency[Imgcompress], image_id: FromPath[str]
) -> Response[bytes]:
    """Return a processed image with its content type, ETag and long-lived caching; with a
    blob store of its own, a redirect to the image's public URL (IMGCOMPRESS_BLOB_PUBLIC_URL)
    or to a presigned link into the bucket, so the bytes do not pass through the service."""
    location = await ic.image_location(image_id)
    if location is not None:
        # A public link never changes; a presigned one is cached for half its lifetime.
        seconds = ic.settings.blob_presign_seconds // 2
        cache = "public, max-age=3600" if ic.blob_public_url else f"private, max-age={seconds}"
        return Response(
            b"", status_code=302, headers={"Location": location, "Cache-Control": cache}
        )
    stored = await ic.image(image_id)
    etag = f'"{stored.etag}"'
    headers = {"ETag": etag, "Cache-Control": _IMAGE_CACHE}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(b"", status_code=304, headers=headers)
    return Response(stored.data, media_type=stored.content_type, headers=headers)


@delete(
    "/api/requests/{request_id:str}",
    status_code=200,
    summary="Cancel a Pending request; delete a finished one",
    guards=_KEYED,
)
async def cancel_or_delete(
    request: Request[Any, Any, Any],
    ic: NamedDependency[Imgcompress],
    owner: NamedDependency[str | None],
    request_id: FromPath[str],
) -> Response[Any]:
    """Cancel the request's unfinished images (200 with its status), or if it is already
    final, remove it and its images (204)."""
    if await ic.cancel_or_delete(request_id, owner=owner):
        return Response(None, status_code=204)
    report = await ic.status(request_id, owner=owner, limit=DEFAULT_PAGE)
    return Response(report.to_document(_request_urls(request, ic, report.request.base_url)))


@get("/health", summary="The process is alive")
async def health() -> dict[str, str]:
    """Answer while the process runs."""
    return {"status": "ok"}


@get("/ready", summary="The store answers")
async def ready(ic: NamedDependency[Imgcompress]) -> dict[str, str]:
    """Answer 200 when storage is reachable (and the in-process worker runs), 503 otherwise."""
    await ic.ready()
    return {"status": "ready"}


def create_app(
    settings: Settings | None = None, *, imgcompress: Imgcompress | None = None
) -> Litestar:
    """Build the service; pass ``imgcompress`` to use one you wired yourself (tests, embedding).

    Either way its worker reports to this app's /metrics (in addition to any metrics it
    was given).
    """
    settings = settings or (imgcompress.settings if imgcompress else Settings())

    metrics = PrometheusMetrics()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        ic = imgcompress or Imgcompress(settings, run_worker=settings.run_worker)
        ic.add_metrics(metrics)
        async with ic:
            app.state.imgcompress = ic
            app.state.metrics = metrics
            yield

    return Litestar(
        route_handlers=[
            upload,
            status,
            output_csv,
            image,
            cancel_or_delete,
            health,
            ready,
            metrics_endpoint,
            *feed_handlers(),
            *page_handlers(),
        ],
        dependencies={
            "ic": Provide(_ic, sync_to_thread=False),
            "owner": Provide(provide_owner, sync_to_thread=False),
        },
        lifespan=[lifespan],
        plugins=[ProblemDetailsPlugin(problem_details_config())],
        exception_handlers=exception_handlers(),
        request_max_body_size=settings.max_upload_bytes + _MULTIPART_OVERHEAD,
        multipart_form_part_limit=16,  # file, webhook_url and the nine output options
        openapi_config=openapi_config(title="imgcompress", version="0.1.0"),
        middleware=[trusted_host_check(settings), body_timeout(settings)],
        before_send=[security_headers(settings)],
    )
