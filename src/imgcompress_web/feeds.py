"""The endpoints for recurring feeds: the list of past requests, retrying the failed
images of a finished request, and every output of a request as one zip."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.params import FromPath, FromQuery, Parameter
from litestar.response import Stream

from imgcompress_core import Imgcompress
from imgcompress_core.documents import iso_time
from imgcompress_core.model import Progress, RequestRecord

from .auth import require_api_key

__all__ = ["feed_handlers"]

_KEYED = [require_api_key]


def _cursor(record: RequestRecord) -> str:
    """Return the cursor that continues after ``record`` (its creation time and id)."""
    return f"{record.created_at!r}_{record.request_id}"


def _parse_cursor(cursor: str) -> tuple[float, str]:
    """Return the (created_at, request_id) pair a cursor names; 400 if it is not one."""
    created, _, request_id = cursor.partition("_")
    try:
        return float(created), request_id
    except ValueError:
        raise ValidationException("cursor is not one this API gave out (nextCursor)") from None


def _summary(record: RequestRecord, progress: Progress) -> dict[str, Any]:
    return {
        "requestId": record.request_id,
        "status": record.status.value,
        "createdAt": iso_time(record.created_at),
        "finishedAt": iso_time(record.finished_at),
        "progress": {
            "total": progress.total,
            "done": progress.done,
            "failed": progress.failed,
            "finished": progress.finished,
        },
    }


@get("/api/requests", summary="Past requests, newest first", guards=_KEYED)
async def list_requests(
    ic: NamedDependency[Imgcompress],
    owner: NamedDependency[str | None],
    limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
    cursor: FromQuery[str | None] = None,
) -> dict[str, Any]:
    """Return requests newest first with their status and counts (only the caller's when
    API keys are on); ``nextCursor`` continues the list when more follow."""
    before = _parse_cursor(cursor) if cursor else None
    found = await ic.history(owner=owner, before=before, limit=limit + 1)
    page = found[:limit]
    answer: dict[str, Any] = {"requests": [_summary(r, p) for r, p in page]}
    if len(found) > limit:
        answer["nextCursor"] = _cursor(page[-1][0])
    return answer


@post(
    "/api/requests/{request_id:str}/retry",
    status_code=202,
    summary="Queue the failed images of a finished request again",
    guards=_KEYED,
)
async def retry_failed(
    ic: NamedDependency[Imgcompress], owner: NamedDependency[str | None], request_id: FromPath[str]
) -> Response[dict[str, Any]]:
    """Queue the failed images (not cancelled ones) again: 202 with how many, the request
    Pending until they finish and then a new webhook; 200 with 0 when none failed; 409
    while the request is still Pending."""
    queued = await ic.retry_failed(request_id, owner=owner)
    return Response({"requestId": request_id, "queued": queued}, status_code=202 if queued else 200)


@get(
    "/api/requests/{request_id:str}/images.zip",
    media_type="application/zip",
    summary="Every processed image of a request, as one zip",
    guards=_KEYED,
)
async def images_zip(
    ic: NamedDependency[Imgcompress], owner: NamedDependency[str | None], request_id: FromPath[str]
) -> Stream:
    """Stream a zip of the processed images, named ``{S. No.}-{Product Name}-{position}``."""
    chunks = await ic.stream_zip(request_id, owner=owner)
    return Stream(
        chunks,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{request_id}-images.zip"'},
    )


def feed_handlers() -> list[Any]:
    """Return the route handlers of this module."""
    return [list_requests, retry_failed, images_zip]
