"""What the compress benchmark times: ``compress_image``, and a bare-Pillow baseline.

Top-level functions, so a process pool can pickle them by name.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable

from PIL import Image

from imgcompress_core import CompressionError, CompressOptions, compress_image

__all__ = ["KEYS", "PARALLEL", "bare_pillow", "functions", "imgcompress"]

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


def functions(quality: int) -> dict[str, Callable[[bytes], bytes | None]]:
    """Return each function by its name in KEYS, bound to ``quality``."""
    return {
        "imgcompress": functools.partial(imgcompress, quality=quality),
        "bare Pillow": functools.partial(bare_pillow, quality=quality),
    }
