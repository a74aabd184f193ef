"""The web page: upload, the request page, static assets and the sample CSV and images."""

from __future__ import annotations

import ipaddress
from importlib.resources import files
from typing import Any

from litestar import MediaType, Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.static_files import create_static_files_router

from imgcompress_core import Imgcompress
from imgcompress_core.samples import sample_csv, sample_image

__all__ = ["page_handlers"]

_STATIC = files("imgcompress_web").joinpath("static")


def _page(name: str) -> str:
    return _STATIC.joinpath(name).read_text(encoding="utf-8")


@get("/", media_type=MediaType.HTML, include_in_schema=False)
async def index() -> str:
    """Serve the upload page."""
    return _page("index.html")


@get("/requests/{request_id:str}", media_type=MediaType.HTML, include_in_schema=False)
async def request_page(request_id: FromPath[str]) -> str:
    """Serve the request page; it loads the status itself."""
    del request_id
    return _page("request.html")


@get("/samples/products.csv", media_type="text/csv; charset=utf-8", summary="A sample CSV")
async def sample_products(request: Request[Any, Any, Any]) -> str:
    """Return a CSV whose images this service serves, to try the job without other servers."""
    return sample_csv(_sample_base(request))


def _sample_base(request: Request[Any, Any, Any]) -> str:
    """Return the base URL for the sample images: this request's, but ``localhost`` for an
    IP address, which the upload check would refuse as loopback or private (the worker
    answers sample URLs itself, for every name the service has)."""
    host = request.url.hostname or ""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return str(request.base_url)
    ic: Imgcompress = request.app.state.imgcompress
    return f"{request.url.scheme}://localhost:{ic.settings.port}"


@get("/samples/images/{name:str}", summary="A sample image", media_type="image/jpeg")
async def sample(name: FromPath[str]) -> Response[bytes]:
    """Return one of the generated sample images."""
    try:
        data, content_type = sample_image(name)
    except KeyError:
        raise NotFoundException(f"no sample image named {name!r}") from None
    return Response(
        data, media_type=content_type, headers={"Cache-Control": "public, max-age=86400"}
    )


def page_handlers() -> list[Any]:
    """Return the page routes and the static-file router."""
    static = create_static_files_router(
        path="/static", directories=[str(_STATIC)], include_in_schema=False
    )
    return [index, request_page, sample_products, sample, static]
