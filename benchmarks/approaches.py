"""What the compress benchmark times: ``compress_image``, and a bare-Pillow baseline.

Top-level functions, so a process pool can pickle them by name. The imgcompress rows
with threads or processes run through the engine's own ``Compressor``
(``imgcompress_core.cpu``: the forkserver pool, CPU limit and all), driven by
``EngineExecutor``.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from typing import Literal

import anyio
from PIL import Image

from imgcompress_core import CompressionError, CompressOptions, ImageFailure, compress_image
from imgcompress_core.cpu import Compressor

__all__ = [
    "KEYS",
    "PARALLEL",
    "EngineExecutor",
    "bare_pillow",
    "bare_pillow_job",
    "functions",
    "imgcompress",
    "is_transparent",
]

KEYS = {  # name: (function, how it runs); pools have --workers workers
    "bare-1": ("bare Pillow", "sequential"),
    "imgcompress-1": ("imgcompress", "sequential"),
    "imgcompress-threads": ("imgcompress", "threads"),
    "imgcompress-processes": ("imgcompress", "processes"),
    "bare-procs": ("bare Pillow", "processes"),
}
PARALLEL = ("imgcompress-threads", "imgcompress-processes")


def imgcompress(data: bytes, quality: int) -> bytes | None:
    """``compress_image``'s output bytes (None when it refuses the image)."""
    try:
        return compress_image(data, CompressOptions(quality=quality)).data
    except CompressionError:
        return None


def bare_pillow(data: bytes, quality: int) -> bytes | None:
    """Plain Pillow: decode, drop alpha, save a Huffman-optimised JPEG. No imgcompress logic."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            pixels = im if im.mode in ("L", "RGB", "CMYK") else im.convert("RGB")
            out = io.BytesIO()
            pixels.save(out, "JPEG", quality=quality, optimize=True)
            return out.getvalue()
    except (OSError, ValueError):
        return None


def is_transparent(im: Image.Image) -> bool:
    """Whether an opened image has real transparency (some alpha below 255): the images
    imgcompress keeps as WebP with alpha."""
    if not im.has_transparency_data:
        return False
    rgba = im if im.mode == "RGBA" else im.convert("RGBA")
    return bool(rgba.getchannel("A").getextrema()[0] < 255)


def bare_pillow_job(data: bytes, quality: int, flatten: bool = False) -> bytes | None:
    """Plain Pillow doing imgcompress's default job: a Huffman-optimised JPEG for an opaque
    image, WebP (Pillow's default effort, 4) for a transparent one; with ``flatten``,
    transparent images go onto white and to JPEG too. No other imgcompress logic."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            out = io.BytesIO()
            if is_transparent(im):
                rgba = im.convert("RGBA")
                if not flatten:
                    rgba.save(out, "WEBP", quality=quality)
                    return out.getvalue()
                pixels = Image.new("RGB", rgba.size, "#ffffff")
                pixels.paste(rgba, mask=rgba.getchannel("A"))
            else:
                pixels = im if im.mode in ("L", "RGB", "CMYK") else im.convert("RGB")
            pixels.save(out, "JPEG", quality=quality, optimize=True)
            return out.getvalue()
    except (OSError, ValueError):
        return None


def functions(quality: int) -> dict[str, Callable[[bytes], bytes | None]]:
    """Return each function by its name in KEYS, bound to ``quality``."""
    return {
        "imgcompress": functools.partial(imgcompress, quality=quality),
        "bare Pillow": functools.partial(bare_pillow, quality=quality),
    }


class EngineExecutor:
    """The service's ``Compressor`` over a list of images: every image submitted at once
    (in order), at most ``workers`` compressing, as the worker does."""

    def __init__(self, pool: Literal["threads", "processes"], workers: int, quality: int) -> None:
        self.compressor = Compressor(pool, workers)
        self.options = CompressOptions(quality=quality)

    def compress_all(self, images: Sequence[bytes]) -> list[bytes | None]:
        """Compress every image; None where the engine refused or failed it."""
        results: list[bytes | None] = [None] * len(images)

        async def one(index: int) -> None:
            try:
                image, _ = await self.compressor.compress(images[index], self.options)
            except ImageFailure:  # CompressionError included
                return
            results[index] = image.data

        async def run() -> None:
            async with anyio.create_task_group() as group:
                for index in range(len(images)):
                    group.start_soon(one, index)

        anyio.run(run)
        return results

    def __enter__(self) -> EngineExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.compressor.close()
