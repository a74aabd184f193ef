"""Sample images and a sample CSV, generated here, so a newcomer can watch the job run.

The images are drawn with Pillow (deterministic, no files shipped, no licence to
track). ``SampleFetcher`` serves them to the worker without a network round trip, so
the sample works with the SSRF guard on: the service would otherwise (rightly) refuse
to download from its own loopback address.
"""

from __future__ import annotations

import csv
import functools
import io
from urllib.parse import urlsplit

from PIL import Image, ImageDraw, ImageFilter

from .errors import FetchError
from .ports import Fetched, Fetcher

__all__ = ["SAMPLE_PREFIX", "SampleFetcher", "sample_csv", "sample_image"]

SAMPLE_PREFIX = "/samples/images/"

# name -> (width, height, hue seed, format)
_SAMPLES: dict[str, tuple[int, int, int, str]] = {
    "chair-front.jpg": (1200, 900, 0, "JPEG"),
    "chair-side.jpg": (900, 1200, 1, "JPEG"),
    "lamp.png": (800, 800, 2, "PNG"),
    "table.jpg": (1600, 1000, 3, "JPEG"),
}
_PALETTE = [((222, 120, 60), (40, 70, 110)), ((90, 160, 90), (230, 220, 200)),
            ((250, 200, 60), (30, 30, 40)), ((140, 90, 60), (200, 215, 230))]  # fmt: skip


def _draw(width: int, height: int, seed: int, transparent: bool) -> Image.Image:
    """Draw a product-like picture: a lit backdrop, a shaded object, some texture."""
    fg, bg = _PALETTE[seed % len(_PALETTE)]
    backdrop = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    base = Image.new("RGB", (width, height), bg)
    image = Image.blend(base, backdrop, 0.35)
    grain = Image.effect_noise((width, height), 18).convert("RGB")
    image = Image.blend(image, grain, 0.12)
    mode = "RGBA" if transparent else "RGB"
    canvas = image.convert(mode) if not transparent else Image.new("RGBA", (width, height))
    draw = ImageDraw.Draw(canvas)
    w, h = width, height
    for step in range(12):
        inset = step * min(w, h) // 60
        shade = tuple(max(0, c - step * 8) for c in fg)
        box = (w // 4 + inset, h // 5 + inset, 3 * w // 4 - inset, 4 * h // 5 - inset)
        draw.rounded_rectangle(box, radius=min(w, h) // 12, fill=(*shade, 255))
    draw.ellipse((w // 3, h // 3, w // 2, h // 2), fill=(255, 255, 255, 200))
    return canvas.filter(ImageFilter.GaussianBlur(1.2))


@functools.cache
def sample_image(name: str) -> tuple[bytes, str]:
    """Return a sample image's bytes and content type; KeyError for an unknown name."""
    width, height, seed, fmt = _SAMPLES[name]
    image = _draw(width, height, seed, transparent=fmt == "PNG")
    out = io.BytesIO()
    if fmt == "JPEG":
        image.save(out, "JPEG", quality=92)
        return out.getvalue(), "image/jpeg"
    image.save(out, "PNG")
    return out.getvalue(), "image/png"


def sample_csv(base_url: str) -> str:
    """Return a sample CSV whose images the service itself serves under ``base_url``."""
    url = f"{base_url.rstrip('/')}{SAMPLE_PREFIX}"
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["S. No.", "Product Name", "Input Image Urls"])
    writer.writerow(["1", "Sample chair", f"{url}chair-front.jpg,{url}chair-side.jpg"])
    writer.writerow(["2", "Sample lamp (transparent PNG)", f"{url}lamp.png"])
    writer.writerow(["3", "Sample table", f"{url}table.jpg"])
    writer.writerow(["4", "A missing image", f"{url}no-such-image.jpg"])
    return out.getvalue()


class SampleFetcher:
    """A Fetcher that answers sample-image URLs itself and passes the rest on."""

    def __init__(self, inner: Fetcher, hosts: frozenset[str]) -> None:
        self._inner = inner
        self._hosts = hosts

    async def fetch(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> Fetched:
        """Serve a sample for this service's own sample URLs; fetch anything else."""
        parts = urlsplit(url)
        if parts.netloc.lower() in self._hosts and parts.path.startswith(SAMPLE_PREFIX):
            name = parts.path.removeprefix(SAMPLE_PREFIX)
            try:
                data, content_type = sample_image(name)
            except KeyError:
                raise FetchError(
                    "the image server answered HTTP 404", code="upstream_http_404"
                ) from None
            return Fetched(url=url, data=data, content_type=content_type)
        return await self._inner.fetch(url, etag=etag, last_modified=last_modified)
