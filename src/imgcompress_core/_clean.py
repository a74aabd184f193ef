"""Remove metadata from an image file without re-encoding it.

For a kept original: the file is rewritten block by block, the blocks that carry
pixels, or say how to show them, copied byte for byte, so the decoded pixels do not
change. Dropped: EXIF (and its GPS position and thumbnail), XMP, comments, text chunks,
timestamps, IPTC and maker data, and anything after the format's end marker. Kept: the
ICC profile, and everything the decoder or the colour management needs. Each function
raises ValueError when the file's structure cannot be followed to its end.
"""

from __future__ import annotations

from ._header import gif_colour_table
from ._jpeg import strip_jpeg
from ._riff import webp_chunks, webp_file

__all__ = ["strip_metadata"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Critical chunks, colour and transparency, pixel density, animation (APNG).
_PNG_KEEP = frozenset(
    {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT"}
    | {b"cICP", b"mDCV", b"mDCv", b"cLLI", b"cLLi", b"bKGD", b"pHYs", b"acTL", b"fcTL", b"fdAT"}
)
_WEBP_KEEP = frozenset({b"VP8X", b"ICCP", b"ANIM", b"ANMF", b"ALPH", b"VP8 ", b"VP8L"})
_WEBP_EXIF_XMP_FLAGS = 0x08 | 0x04
# GIF application extensions that play a part in showing it: looping, ICC profile.
_GIF_KEEP_APPS = frozenset({b"NETSCAPE2.0", b"ANIMEXTS1.0", b"ICCRGBG1012"})
_GIF_GRAPHIC_CONTROL, _GIF_PLAIN_TEXT, _GIF_APPLICATION = 0xF9, 0x01, 0xFF


def strip_metadata(data: bytes, fmt: str) -> bytes:
    """Return ``data`` (a JPEG, PNG, WebP or GIF file) without its metadata, pixels
    untouched; raise ValueError when its structure cannot be followed."""
    if fmt == "JPEG":
        return strip_jpeg(data)
    if fmt == "PNG":
        return _strip_png(data)
    if fmt == "WEBP":
        return _strip_webp(data)
    if fmt == "GIF":
        return _strip_gif(data)
    raise ValueError(f"cannot clean {fmt} files")


def _strip_png(data: bytes) -> bytes:
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG")
    out, pos = [_PNG_SIGNATURE], len(_PNG_SIGNATURE)
    while True:
        if pos + 12 > len(data):
            raise ValueError("the PNG ends before its IEND chunk")
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + int.from_bytes(data[pos : pos + 4], "big")
        if end > len(data):
            raise ValueError(f"the PNG's {kind!r} chunk is truncated")
        if kind in _PNG_KEEP:
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            return b"".join(out)


def _strip_webp(data: bytes) -> bytes:
    kept = []
    for name, payload in webp_chunks(data):
        if name not in _WEBP_KEEP:
            continue
        if name == b"VP8X" and payload:
            payload = bytes([payload[0] & ~_WEBP_EXIF_XMP_FLAGS]) + payload[1:]
        kept.append((name, payload))
    if not kept:
        raise ValueError("the WebP has no image chunk")
    return webp_file(kept)


def _strip_gif(data: bytes) -> bytes:
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        raise ValueError("not a GIF")
    pos = 13 + gif_colour_table(data[10])
    if pos > len(data):
        raise ValueError("the GIF is truncated")
    out = [data[:pos]]
    # Like browsers, stop at the trailer, the end of the data or a byte that starts no block.
    while pos < len(data) and data[pos] in (0x21, 0x2C):
        if data[pos] == 0x2C:  # an image: descriptor, colour table, LZW size, data
            if pos + 11 > len(data):
                raise ValueError("the GIF is truncated")
            end = _after_sub_blocks(data, pos + 10 + gif_colour_table(data[pos + 9]) + 1)
            out.append(data[pos:end])
        else:
            if pos + 2 > len(data):
                raise ValueError("the GIF is truncated")
            end = _after_sub_blocks(data, pos + 2)
            label = data[pos + 1]
            if label in (_GIF_GRAPHIC_CONTROL, _GIF_PLAIN_TEXT) or (
                label == _GIF_APPLICATION and data[pos + 3 : pos + 14] in _GIF_KEEP_APPS
            ):
                out.append(data[pos:end])
        pos = end
    out.append(b";")
    return b"".join(out)


def _after_sub_blocks(data: bytes, pos: int) -> int:
    """Skip a chain of GIF data sub-blocks, returning the index after its terminator."""
    while True:
        if pos >= len(data):
            raise ValueError("the GIF is truncated")
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos
