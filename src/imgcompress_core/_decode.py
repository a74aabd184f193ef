"""Decode what we accept, within the caps, into pixels ready to encode.

Only JPEG, PNG, WebP and GIF decoders ever run. The caps (pixels, decoded bytes, JPEG
scans, animation frames) are checked before pixels are decoded; see
:mod:`.compress` for the whole policy. A still image comes back upright (EXIF
orientation applied) in one of the modes L, RGB, RGBA (really transparent) or CMYK; an
animation is only judged by its headers, and the caller keeps it as it is.

When the output will be shrunk to fit a box, a JPEG is decoded with libjpeg's DCT
scaling (``draft``) to the smallest 1/2, 1/4 or 1/8 scale still at least as large as
the box, which saves most of the decoding time and memory of a large photo.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Protocol

from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from ._fast import decode_png
from ._header import pixel_bytes
from ._jpeg import Scans, walk_scans
from ._meta import Kept, copyright_metadata
from .errors import CompressionError

__all__ = [
    "ACCEPTED_FORMATS",
    "MIB",
    "Animation",
    "Decoded",
    "PlainJpeg",
    "check_size",
    "decode",
    "plain_jpeg",
]

ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF")
MIB = 1 << 20

# (offset, magic, format name, accepted): enough to name what a failed file was.
_MAGIC: tuple[tuple[int, bytes, str, bool], ...] = (
    (0, b"\xff\xd8\xff", "JPEG", True),
    (0, b"\x89PNG\r\n\x1a\n", "PNG", True),
    (0, b"GIF8", "GIF", True),
    (8, b"WEBP", "WEBP", True),
    (0, b"BM", "BMP", False),
    (0, b"II*\x00", "TIFF", False),
    (0, b"MM\x00*", "TIFF", False),
    (0, b"%PDF", "PDF", False),
    (0, b"%!PS", "EPS", False),
    (0, b"\xc5\xd0\xd3\xc6", "EPS", False),
    (0, b"8BPS", "PSD", False),
    (0, b"\x00\x00\x01\x00", "ICO", False),
    (0, b"qoif", "QOI", False),
    (0, b"\x00\x00\x00\x0cjP  ", "JPEG 2000", False),
    (0, b"\xffO\xffQ", "JPEG 2000", False),
    (0, b"\x00\x00\x00\x0cJXL ", "JPEG XL", False),
    (4, b"ftypavif", "AVIF", False),
    (4, b"ftypheic", "HEIC", False),
    (4, b"ftypheix", "HEIC", False),
    (4, b"ftypmif1", "HEIF", False),
)
_TRANSPOSED_ORIENTATIONS = frozenset(range(2, 9))  # EXIF values exif_transpose acts on
_QUARTER_TURNS = frozenset({5, 6, 7, 8})  # orientations that swap width and height
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


@dataclass(slots=True)
class Decoded:
    """A decoded still image, ready to encode, and what is known about its input."""

    image: Image.Image
    input_format: str
    icc: bytes | None
    rotated: bool  # its EXIF orientation was applied
    notes: list[str]
    rights: Kept = field(default_factory=Kept)  # with metadata="copyright"
    reduced: float = 1.0  # how many times smaller a reduced JPEG decode made it

    @property
    def size(self) -> tuple[int, int]:
        """The pixel size, upright."""
        return self.image.size


@dataclass(frozen=True, slots=True)
class Animation:
    """An animated input: kept as it is (its frames are never decoded)."""

    input_format: str
    size: tuple[int, int]


class _Caps(Protocol):
    """What ``decode`` reads from CompressOptions."""

    @property
    def max_pixels(self) -> int:
        """The pixel cap."""

    @property
    def max_decode_bytes(self) -> int:
        """The decoded-bytes cap."""

    @property
    def max_scans(self) -> int:
        """The JPEG scan cap."""

    @property
    def max_frames(self) -> int:
        """The animation frame cap."""

    @property
    def max_animation_pixels(self) -> int:
        """The animation pixel cap."""


def decode(
    data: bytes,
    caps: _Caps,
    *,
    box: tuple[int, int] | None = None,
    keep_rights: bool = False,
    accelerated: bool = True,
) -> Decoded | Animation:
    """Decode a still image into one of the modes ``_normalise`` gives; an animation is
    judged by its headers and returned as an :class:`Animation`.

    ``box``: the output will be shrunk to fit it (a JPEG may be decoded reduced).
    ``keep_rights``: read the rights metadata (``metadata="copyright"``).
    ``accelerated``: a PNG may be decoded by :mod:`._fast` (else Pillow decodes all).
    """
    with _open(data) as im:
        fmt = "JPEG" if im.format == "MPO" else str(im.format)
        check_size(im.width, im.height, pixel_bytes(im.mode, im.has_transparency_data), caps)
        if fmt == "JPEG":
            _check_scans(data, caps.max_scans)
        elif getattr(im, "is_animated", False):
            _check_animation(im, caps)
            return Animation(fmt, im.size)
        rights = copyright_metadata(im) if keep_rights else Kept()
        full_width = im.width
        if box is not None and fmt == "JPEG":
            _draft(im, box)
        notes: list[str] = []
        oriented, rotated = _upright_pixels(im, data, fmt, notes, accelerated)
        icc = im.info.get("icc_profile")
        reduced = full_width / im.width
        work, mode_note = _normalise(oriented)
        if mode_note:
            notes.append(mode_note)
        icc_bytes = icc if isinstance(icc, bytes) and icc else None
        return Decoded(work, fmt, icc_bytes, rotated, notes, rights, reduced)


@dataclass(frozen=True, slots=True)
class PlainJpeg:
    """A JPEG whose pixels can be re-encoded as they are: no turn, RGB or greyscale."""

    mode: str  # "RGB" or "L"
    size: tuple[int, int]
    icc: bytes | None
    input_format: str = "JPEG"
    rotated: bool = False
    rights: Kept = field(default_factory=Kept)  # never kept: copyright goes through decode


def plain_jpeg(data: bytes, caps: _Caps) -> PlainJpeg | None:
    """Check a JPEG as :func:`decode` does (raising what it raises); say what it is if it
    needs no EXIF turn and is RGB or greyscale, else None (EXIF that cannot be read
    included: :func:`decode` notes that)."""
    with _open(data) as im:
        if im.format not in ("JPEG", "MPO") or im.mode not in ("RGB", "L"):
            return None
        check_size(im.width, im.height, pixel_bytes(im.mode, im.has_transparency_data), caps)
        if not _check_scans(data, caps.max_scans).complete:
            return None  # libjpeg would run out of data: Pillow calls that truncated
        try:
            orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
        except Exception:
            return None
        if orientation in _TRANSPOSED_ORIENTATIONS:
            return None
        icc = im.info.get("icc_profile")
        return PlainJpeg(im.mode, im.size, icc if isinstance(icc, bytes) and icc else None)


def _upright_pixels(
    im: ImageFile.ImageFile, data: bytes, fmt: str, notes: list[str], accelerated: bool
) -> tuple[Image.Image, bool]:
    """Decode the pixels, EXIF orientation applied; say whether it turned them."""
    fast = decode_png(data) if fmt == "PNG" and accelerated else None
    if fast is not None:  # a PNG libspng takes has no EXIF: nothing to turn
        return fast, False
    im.load()
    try:
        oriented = _oriented(im)
    except Exception:  # unreadable EXIF must not lose an otherwise good image
        notes.append("its EXIF data could not be read, so its orientation was not applied")
        return im, False
    return oriented, oriented is not im


def _draft(im: ImageFile.ImageFile, box: tuple[int, int]) -> None:
    """Let libjpeg decode at the smallest scale that still covers ``box`` once upright."""
    try:
        orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        orientation = 1
    width, height = box
    if orientation in _QUARTER_TURNS:
        width, height = height, width
    scale = min(width / im.width, height / im.height)
    if scale < 0.5:
        im.draft(None, (max(1, int(im.width * scale)), max(1, int(im.height * scale))))


def check_size(width: int, height: int, bytes_per_pixel: int, caps: _Caps) -> None:
    """Refuse an image with too many pixels, or too many bytes once decoded."""
    pixels = width * height
    if pixels > caps.max_pixels:
        raise CompressionError(
            f"the image is {width}x{height} = {pixels} pixels, over the "
            f"{caps.max_pixels}-pixel cap (max_image_pixels)",
            code="image_too_large",
        )
    if pixels * bytes_per_pixel > caps.max_decode_bytes:
        raise CompressionError(
            f"the image would take {mib(pixels * bytes_per_pixel)} of memory decoded "
            f"({width}x{height} pixels of {bytes_per_pixel} bytes), over the "
            f"{mib(caps.max_decode_bytes)} memory budget for decoding (max_decode_bytes)",
            code="image_too_large",
        )


def mib(size: int) -> str:
    """Return a byte count in MiB, for messages."""
    return f"{size / MIB:.1f} MiB"


def _check_scans(data: bytes, limit: int) -> Scans:
    """Refuse a JPEG with more than ``limit`` scans, counted without decoding.

    Each scan of a progressive JPEG makes the decoder pass over the whole image again, so
    a small file with thousands of scans costs minutes of CPU (a "scan bomb"). The scans
    are found the way libjpeg finds them, so stray bytes or fill bytes hide none.
    """
    scans = walk_scans(data, limit)
    if scans.number > limit:
        raise CompressionError(
            f"the JPEG has more than {limit} scans (max_jpeg_scans); decoding it would "
            "take far too long",
            code="image_too_complex",
        )
    return scans


def _check_animation(im: Image.Image, caps: _Caps) -> None:
    """Refuse animations with too many frames, or too many pixels in all."""
    frames = int(getattr(im, "n_frames", 1))
    if frames > caps.max_frames:
        raise CompressionError(
            f"the animation has {frames} frames, over the {caps.max_frames}-frame cap "
            "(max_animation_frames)",
            code="too_many_frames",
        )
    total = frames * im.width * im.height
    if total > caps.max_animation_pixels:
        raise CompressionError(
            f"the animation has {total} pixels in all ({frames} frames of {im.width}x"
            f"{im.height}), over the {caps.max_animation_pixels}-pixel cap "
            "(max_animation_pixels)",
            code="image_too_large",
        )


def _open(data: bytes) -> ImageFile.ImageFile:
    """Open with the accepted decoders only, naming what the data is when that fails."""
    try:
        return Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS))
    except UnidentifiedImageError as exc:
        for offset, magic, name, accepted in _MAGIC:
            if data[offset : offset + len(magic)] != magic:
                continue
            if accepted:
                message = f"the data starts like a {name} file but cannot be read"
                raise CompressionError(message, code="corrupt_image") from exc
            message = f"{name} images are not accepted (accepted: JPEG, PNG, WebP, GIF)"
            raise CompressionError(message, code="unsupported_format") from exc
        message = "the data is not an image in an accepted format (JPEG, PNG, WebP, GIF)"
        raise CompressionError(message, code="not_an_image") from exc


def _oriented(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; return ``im`` itself, not a copy, when there is none.

    ``ImageOps.exif_transpose`` copies the whole image when there is nothing to do; the
    copy costs about a tenth of a JPEG's compression time and one more full-size buffer.
    """
    if im.getexif().get(ExifTags.Base.Orientation, 1) not in _TRANSPOSED_ORIENTATIONS:
        return im
    return ImageOps.exif_transpose(im)


def _normalise(im: Image.Image) -> tuple[Image.Image, str | None]:
    """Bring an image to one of the modes L, RGB, RGBA (really transparent) or CMYK.

    No step copies an image it does not need to: a full-size copy of a 49-megapixel
    RGBA image is 196 MB.
    """
    mode = im.mode
    if mode in _SIXTEEN_BIT_MODES:  # "I;16" scales in place; the other forms through "I"
        wide = im if mode in ("I;16", "I", "F") else im.convert("I")
        return wide.point(lambda v: v / 256).convert("L"), "scaled 16-bit samples to 8 bits"
    if im.has_transparency_data:
        rgba = im if mode == "RGBA" else im.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] != 255:
            return rgba, None
        grey = mode in ("L", "LA", "La")
        return rgba.convert("L" if grey else "RGB"), "dropped its unused (fully opaque) alpha"
    if mode in ("L", "RGB", "CMYK"):
        return im, None
    return im.convert("L" if mode == "1" else "RGB"), None
