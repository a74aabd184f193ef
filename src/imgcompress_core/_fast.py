"""The common images through ``imagecodecs`` (imgcompress[fast]), with Pillow's results.

Both paths give exactly what Pillow gives, only sooner (benchmarks/RESULTS.md,
section 9; ``benchmarks/decoders.py``), and leave everything else to Pillow: they answer
None whenever an image is not one they take or ``imagecodecs`` refuses it, and Pillow then
decodes it and judges it, so errors are exactly Pillow's.

PNG (:func:`decode_png`)
    libspng decodes 8-bit RGB and RGBA PNGs about a third faster than Pillow, with the
    same pixels. With the compiled accelerator ``imgcompress_core._unfilter`` (built
    when a C compiler was there at install time) a non-interlaced one is decoded in two
    steps instead, in about 60 % of libspng's CPU: libdeflate inflates its rows (two to
    three times faster than the zlib libspng links) into one buffer, and the C code
    undoes the row filters in that buffer. The chunks up to the last ``IDAT`` are read
    first, each CRC checked, as libspng and Pillow check them; anything unexpected (a bad
    CRC or zlib stream, rows of the wrong length, an unknown filter type) leaves the
    image to libspng and Pillow, which report it.

    Not taken by either: a transparent colour (``tRNS``), EXIF (``eXIf``, which may
    follow the pixels and so would need Pillow's whole decode to be found) or animation
    chunks (``acTL``); the bytes are searched for those chunk names, so a name that
    happens to occur in compressed data only sends the image to Pillow. libspng writes
    its own array (3 bytes a pixel for RGB), and the accelerator its rows (the same and a
    byte a row), before Pillow copies them into its 4-byte form, a brief 7 bytes a pixel
    where Pillow holds 4: only images up to :data:`MAX_PIXELS` are taken, a bounded
    overshoot of the decoding budget.

JPEG (:func:`jpeg_round_trip`)
    A JPEG that is re-encoded as it is (no turn, no resize, RGB or grey) is decoded and
    encoded by the same libjpeg-turbo as Pillow's, on arrays, never becoming a Pillow
    image: Pillow's decoder reads one row at a time into 4-byte pixels and its encoder
    packs them back, about a tenth of the work. The output has the same pixels and
    markers as Pillow's (baseline, Huffman-optimised, 4:2:0 for colour). The array takes
    3 bytes a pixel (1 for grey), less than Pillow's image.

JPEG, without decoding its pixels (:func:`jpeg_requantised`)
    When the compiled accelerator ``imgcompress_core._requantise`` was built at install
    time (a C compiler and libjpeg's headers were there), a 4:2:0 YCbCr or greyscale JPEG
    whose quantisation steps are all at least as fine as ``quality``'s is re-quantised in
    the DCT domain instead: its coefficients are read (Huffman decoding only), scaled to
    libjpeg's tables for ``quality`` and written baseline and Huffman-optimised. A quarter
    to a third less CPU than decoding and encoding the pixels, the same tables and
    markers, and on the corpus the same SSIMULACRA2 for 0.8 % more bytes
    (benchmarks/RESULTS.md, section 9); not Pillow's bytes. Anything it does not take
    (another subsampling or colour space, a coarser table, a libjpeg warning or error)
    goes to the pixel path above.
"""

from __future__ import annotations

import importlib.util
import zlib
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from PIL import Image

__all__ = [
    "MAX_PIXELS",
    "PRELOAD",
    "available",
    "decode_png",
    "jpeg_requantised",
    "jpeg_round_trip",
    "requantiser_available",
]

# What a forkserver should import so that its children share the codecs' and numpy's
# pages instead of each importing its own (about 16 MB a process); skipped when absent.
PRELOAD = (
    "imagecodecs._spng",
    "imagecodecs._deflate",
    "imagecodecs._jpeg8",
    "imgcompress_core._requantise",
    "imgcompress_core._unfilter",
)
MAX_PIXELS = 16_000_000  # 48 MB of libspng's array at most, beside Pillow's image
_PNG_COLOUR_TYPES = {2: 3, 6: 4}  # PNG colour type -> samples a pixel, at 8 bits a sample
_SENT_TO_PILLOW = (b"tRNS", b"eXIf", b"acTL")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR = b"\0\0\0\x0dIHDR"  # its 13 bytes: size, bit depth, colour type, 3 methods

_T = TypeVar("_T")


def _or_none(codec: Callable[..., _T], *args: Any, **options: Any) -> _T | None:
    """Call an ``imagecodecs`` function; None if it refuses the image (Pillow then decodes
    it, and reports what is wrong if anything is). Running out of memory is not a refusal:
    it propagates, as from Pillow."""
    try:
        return codec(*args, **options)
    except MemoryError:
        raise
    except Exception:
        return None


@cache
def available() -> bool:
    """Return whether ``imagecodecs`` (imgcompress[fast]) is installed."""
    return importlib.util.find_spec("imagecodecs") is not None


@cache
def _requantiser() -> Callable[[bytes, int], bytes | None] | None:
    try:
        from . import _requantise  # compiled at install time when it could be
    except ImportError:
        return None
    return _requantise.requantise


def requantiser_available() -> bool:
    """Return whether the compiled accelerator for JPEGs was built with this install."""
    return _requantiser() is not None


def decode_png(data: bytes) -> Image.Image | None:
    """Return the PNG's pixels as a Pillow image, or None to let Pillow decode it."""
    if not available() or len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    bit_depth, colour_type = data[24], data[25]
    samples = _PNG_COLOUR_TYPES.get(colour_type)
    if samples is None or bit_depth != 8 or not 0 < width * height <= MAX_PIXELS:
        return None
    if any(name in data for name in _SENT_TO_PILLOW):
        return None
    if (pixels := _inflated_png(data, width, height, samples)) is not None:
        mode = "RGBA" if samples == 4 else "RGB"
        return Image.frombuffer(mode, (width, height), pixels, "raw", mode, 0, 1)
    import imagecodecs  # imgcompress[fast]

    array = _or_none(imagecodecs.spng_decode, data)
    if array is None or array.shape != (height, width, samples):
        return None
    return Image.fromarray(array)  # (height, width, 3 or 4) bytes: RGB or RGBA


@cache
def _unfilterer() -> Callable[[bytearray, int, int, int], bool] | None:
    try:
        from . import _unfilter  # compiled at install time when it could be
    except ImportError:
        return None
    return _unfilter.unfilter


def _inflated_png(data: bytes, width: int, height: int, samples: int) -> bytearray | None:
    """Return a non-interlaced 8-bit PNG's packed pixels, inflated by libdeflate and
    unfiltered by the compiled accelerator; None when either is missing or anything in the
    file is not as it should be (libspng or Pillow then decodes it and reports it)."""
    unfilter = _unfilterer()
    if unfilter is None:
        return None
    compressed = _idat_stream(data)  # the chunk walk and CRCs only where they can pay
    if compressed is None:
        return None
    import imagecodecs  # imgcompress[fast]

    packed = width * samples * height
    rows = _or_none(imagecodecs.deflate_decode, compressed, out=bytearray(packed + height))
    if not isinstance(rows, bytearray) or len(rows) != packed + height:
        return None
    if not unfilter(rows, width, height, samples):
        return None
    del rows[packed:]  # the packed pixels stay where they are
    return rows


def _idat_stream(data: bytes) -> bytes | None:
    """Return a PNG's zlib stream (its ``IDAT`` chunks' data, joined) when its header is
    ``IHDR`` of a deflated, filtered, non-interlaced image and every chunk up to the last
    ``IDAT`` is whole, named by four letters, with the right CRC, and not ``IEND``; else
    None. Chunks after the pixels are not read."""
    if not data.startswith(_PNG_SIGNATURE + _IHDR) or data[26:29] != b"\0\0\0":
        return None
    view, at, parts = memoryview(data), len(_PNG_SIGNATURE), list[memoryview]()
    while at + 12 <= len(data):
        size, name = int.from_bytes(view[at : at + 4], "big"), bytes(view[at + 4 : at + 8])
        if parts and name != b"IDAT":
            break
        end, first = at + 8 + size, at == len(_PNG_SIGNATURE)
        if size > 0x7FFF_FFFF or end + 4 > len(data) or (name == b"IHDR") != first:
            return None
        if not name.isalpha() or name == b"IEND":  # a name of four ASCII letters; no end yet
            return None
        if zlib.crc32(view[at + 4 : end]) != int.from_bytes(view[end : end + 4], "big"):
            return None
        if name == b"IDAT":
            parts.append(view[at + 8 : end])
        at = end + 4
    return b"".join(parts) if parts else None


def jpeg_round_trip(data: bytes, mode: str, size: tuple[int, int], quality: int) -> bytes | None:
    """Re-encode a ``mode`` (RGB or L) JPEG of ``size`` at ``quality`` as Pillow would, or
    return None to let Pillow do it. The caller has checked the caps and the scans."""
    if not available() or mode not in ("RGB", "L"):
        return None
    import imagecodecs  # imgcompress[fast]

    width, height = size
    pixels = _or_none(imagecodecs.jpeg8_decode, data)
    if pixels is None or pixels.shape != ((height, width, 3) if mode == "RGB" else (height, width)):
        return None
    encoded = _or_none(
        imagecodecs.jpeg8_encode, pixels, level=quality, optimize=True, subsampling="420"
    )
    return None if encoded is None else bytes(encoded)


def jpeg_requantised(data: bytes, quality: int) -> bytes | None:
    """Re-quantise a 4:2:0 or grey JPEG to ``quality``'s tables without decoding its
    pixels, or return None to let the pixel path re-encode it. The caller has checked
    the caps and the scans."""
    requantise = _requantiser()
    return None if requantise is None else requantise(data, quality)
