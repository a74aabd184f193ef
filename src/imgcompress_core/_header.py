"""An image's pixel size and decoded size, read from its header in plain Python.

Nothing here decodes, allocates per pixel or calls a C library, so the service can
judge untrusted bytes before they reach a decoder (and in the process that schedules
the work, not only in the one that decodes). The sizes are those Pillow reports:
a GIF is as large as its screen or its first frame, whichever reaches further.

The decoded size counts the image in the form it is compressed from: Pillow keeps
three bands in four bytes a pixel, and palette images (and greyscale ones with a
transparent colour) are expanded to RGB or RGBA before encoding.
"""

from __future__ import annotations

from typing import NamedTuple

from ._jpeg import frame_header

__all__ = ["Header", "gif_colour_table", "is_accepted_format", "pixel_bytes", "read_header"]

_TWO_BYTES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def pixel_bytes(mode: str, transparent: bool) -> int:
    """Return the bytes a pixel of a Pillow image of ``mode`` takes as it is compressed."""
    if mode in _TWO_BYTES:
        return 2  # scaled to 8 bits; any transparent colour is dropped
    if mode in ("1", "L") and not transparent:
        return 1
    return 4  # RGB, RGBA, CMYK, LA; palette images, expanded to RGB or RGBA


class Header(NamedTuple):
    """What a header says: the format, the pixel size and the bytes per decoded pixel."""

    format: str
    width: int
    height: int
    pixel_bytes: int

    @property
    def pixels(self) -> int:
        """The number of pixels."""
        return self.width * self.height

    @property
    def decoded_bytes(self) -> int:
        """The bytes the decoded image takes in memory."""
        return self.width * self.height * self.pixel_bytes


def read_header(data: bytes) -> Header | None:
    """Return what the header of a JPEG, PNG, GIF or WebP says, or None if unreadable."""
    try:
        if data.startswith(b"\xff\xd8\xff"):
            return _jpeg(data)
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            return _png(data)
        if data.startswith(b"GIF8"):
            return _gif(data)
        if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
            return _webp(data)
    except IndexError:  # truncated
        return None
    return None


def is_accepted_format(data: bytes) -> bool:
    """Return True if the data starts like a JPEG, PNG, GIF or WebP file."""
    return data.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8")) or (
        data.startswith(b"RIFF") and data[8:12] == b"WEBP"
    )


def _jpeg(data: bytes) -> Header | None:
    frame = frame_header(data)
    if frame is None:
        return None
    width, height, components = frame
    return Header("JPEG", width, height, 1 if components == 1 else 4)


def _png(data: bytes) -> Header | None:
    if data[12:16] != b"IHDR" or len(data) < 26:
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth, colour = data[24], data[25]
    if colour != 0:  # RGB, palette, greyscale + alpha, RGBA
        return Header("PNG", width, height, 4)
    if depth == 16:
        return Header("PNG", width, height, 2)
    return Header("PNG", width, height, 4 if _has_png_chunk(data, b"tRNS") else 1)


def _has_png_chunk(data: bytes, kind: bytes) -> bool:
    """Return True if a chunk of ``kind`` comes before the first IDAT (or the end)."""
    pos = 8
    while pos + 8 <= len(data):
        found = data[pos + 4 : pos + 8]
        if found == kind:
            return True
        if found == b"IDAT":
            return False
        pos += 12 + int.from_bytes(data[pos : pos + 4], "big")
    return False


def _gif(data: bytes) -> Header | None:
    if len(data) < 13:
        return None
    width, height = _le16(data, 6), _le16(data, 8)
    pos = 13 + gif_colour_table(data[10])
    while pos < len(data):  # Pillow grows the image to its first frame's extent
        block = data[pos]
        if block == 0x2C:
            left, top = _le16(data, pos + 1), _le16(data, pos + 3)
            right, bottom = left + _le16(data, pos + 5), top + _le16(data, pos + 7)
            return Header("GIF", max(width, right), max(height, bottom), 4)
        if block != 0x21:
            break
        pos += 2
        while data[pos]:  # the extension's sub-blocks
            pos += data[pos] + 1
        pos += 1
    return Header("GIF", width, height, 4)


def _webp(data: bytes) -> Header | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
    elif chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = _le16(data, 26) & 0x3FFF, _le16(data, 28) & 0x3FFF
    elif chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    else:
        return None
    return Header("WEBP", width, height, 4)


def gif_colour_table(flags: int) -> int:
    """Return the bytes of the colour table a GIF screen or frame descriptor announces."""
    return 3 << ((flags & 7) + 1) if flags & 0x80 else 0


def _le16(data: bytes, at: int) -> int:
    if at + 2 > len(data):
        raise IndexError(at)
    return int.from_bytes(data[at : at + 2], "little")
