"""Decode the common PNGs with libspng (imgcompress[fast]), pixel for pixel as Pillow does.

Pillow's PNG decoder unfilters rows in plain C with zlib; libspng, as ``imagecodecs``
builds it, does the same about 35 % faster on the corpus's photographs
(benchmarks/RESULTS.md, section 9). Only the PNGs whose pixels both decoders give
identically are taken: 8-bit RGB or RGBA, no transparent colour (``tRNS``), no EXIF
(``eXIf``, which may follow the pixels and so would need Pillow's whole decode to be
found) and no animation chunks (``acTL``); the bytes are searched for those chunk names,
so a name that happens to occur in compressed data only sends the image to Pillow.
Whenever libspng refuses the data (a bad checksum, truncation, anything), Pillow decodes
it instead and its judgement stands, so errors are exactly Pillow's.

libspng writes its own array (3 bytes a pixel for RGB) before Pillow copies it into its
4-byte form, so the fast path briefly holds 7 bytes a pixel where Pillow holds 4: it
takes images up to :data:`MAX_PIXELS` only, a bounded overshoot of the decoding budget.
"""

from __future__ import annotations

import importlib.util
from functools import cache

from PIL import Image

__all__ = ["MAX_PIXELS", "PRELOAD", "available", "decode_png"]

# What a forkserver should import so that its children share libspng and numpy's pages
# instead of each importing its own (about 16 MB a process); ignored when not installed.
PRELOAD = "imagecodecs._spng"
MAX_PIXELS = 16_000_000  # 48 MB of libspng's array at most, beside Pillow's image
_PIL_MODES = {2: "RGB", 6: "RGBA"}  # PNG colour type -> Pillow mode, at 8 bits a sample
_SENT_TO_PILLOW = (b"tRNS", b"eXIf", b"acTL")


@cache
def available() -> bool:
    """Return whether libspng's binding (``imagecodecs``, imgcompress[fast]) is installed."""
    return importlib.util.find_spec("imagecodecs") is not None


def decode_png(data: bytes) -> Image.Image | None:
    """Return the PNG's pixels as a Pillow image, or None to let Pillow decode it."""
    if not available() or len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    bit_depth, colour_type = data[24], data[25]
    mode = _PIL_MODES.get(colour_type)
    if mode is None or bit_depth != 8 or not 0 < width * height <= MAX_PIXELS:
        return None
    if any(name in data for name in _SENT_TO_PILLOW):
        return None
    import imagecodecs  # imgcompress[fast]

    try:
        pixels = imagecodecs.spng_decode(data)
    except MemoryError:
        raise
    except Exception:  # Pillow decodes it, and reports what is wrong if anything is
        return None
    if pixels.shape != (height, width, len(mode)):
        return None
    return Image.fromarray(pixels)  # (height, width, 3 or 4) bytes: RGB or RGBA
