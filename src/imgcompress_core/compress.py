"""Compress one image's bytes with Pillow, by a fixed and documented policy.

Decoding
    Only JPEG, PNG, WebP and GIF decoders ever run (``Image.open(..., formats=...)``).
    Empty or unrecognised data fails with code ``not_an_image``; a file recognised by its
    magic bytes as another format (BMP, TIFF, PDF, HEIC, ...) fails with
    ``unsupported_format`` naming it. Before any pixel is decoded, the header is read in
    plain Python (``_header``) and ``width * height`` is held to
    ``CompressOptions.max_pixels`` (``image_too_large``, naming ``max_image_pixels``) and
    the decoded size (width x height x the bytes per pixel of the form it is compressed
    from: 1 for greyscale, 2 for 16-bit greyscale, 4 for RGB, RGBA, CMYK and palette
    images, which are expanded) to
    ``max_decode_bytes`` (``image_too_large``, naming ``max_decode_bytes``); Pillow's own
    decompression-bomb guard also maps to ``image_too_large``. A JPEG's scans are counted
    the way libjpeg finds markers (``_jpeg``) and more than ``max_scans`` fail with
    ``image_too_complex``. Truncated or corrupt data fails with ``corrupt_image``; a
    failure to encode, with ``compression_failed``. No other exception escapes, whatever
    the bytes. Pillow's process-wide settings are never changed. A multi-picture JPEG
    (MPO) is a JPEG: its first picture is used.

Pixels
    EXIF orientation is applied (unreadable EXIF is ignored, and the note says so), then
    the pixel size is kept (no resizing). All metadata (EXIF, XMP, comments, text chunks)
    is dropped except the ICC profile, kept when its colour space matches the output's.
    Bilevel images become greyscale; 16-bit samples are scaled to 8-bit greyscale (divided
    by 256, not clipped; a 16-bit ``tRNS`` colour is not kept); CMYK stays CMYK and
    greyscale stays greyscale; any other mode becomes RGB.

Encoding
    An image with real transparency (some alpha below 255, from an alpha channel, a palette
    or a ``tRNS`` chunk) becomes lossy WebP with alpha at ``quality``. Everything else -- a
    fully opaque alpha channel is dropped -- becomes a baseline, Huffman-optimised JPEG at
    ``quality`` with the default 4:2:0 chroma subsampling (sharp's defaults).
    Animated GIF/WebP/PNG images are not re-encoded. If the encoded result is not smaller
    than the input, the input is kept instead (``kept_original``), so an image never
    grows -- but cleaned like every output: its metadata is removed without re-encoding
    (``_clean``: EXIF, XMP, comments, text chunks, anything after the end marker; the
    ICC profile stays), so its pixels are the original's. The one exception: a still
    image that needed its EXIF orientation applied cannot be made upright without
    re-encoding, so its re-encoded version is stored even though it is larger. An
    animation keeps its frames as they are (any EXIF orientation goes with the EXIF).
    ``width``/``height`` are always those of the stored pixels as displayed.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from ._clean import strip_metadata
from ._header import is_accepted_format, pixel_bytes, read_header
from ._jpeg import count_scans
from .errors import CompressionError

__all__ = [
    "ACCEPTED_FORMATS",
    "CompressOptions",
    "CompressedImage",
    "compress_image",
    "decoded_size",
    "extension_for",
    "timed_compress",
]

ACCEPTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF")
MIB = 1 << 20

_CONTENT_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}
_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/png": ".png",
    "image/gif": ".gif",
}
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
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_ICC_SPACES = {"L": b"GRAY", "RGB": b"RGB ", "RGBA": b"RGB ", "CMYK": b"CMYK"}


@dataclass(frozen=True, slots=True)
class CompressOptions:
    """How to compress: the lossy quality, and the caps on what may be decoded."""

    quality: int = 50  # JPEG/WebP quality, 1..95
    max_pixels: int = 50_000_000  # width*height cap, checked from the header before decoding
    max_frames: int = 1000  # frames of an animated GIF/WebP/PNG (kept as they are)
    max_animation_pixels: int = 500_000_000  # width*height*frames of an animation
    max_scans: int = 100  # scans of a (progressive) JPEG, counted before decoding
    # Decoded bytes of the images being compressed at once (Compressor admits images by
    # it), and so of any one image; checked from the header before decoding.
    max_decode_bytes: int = 512 * MIB

    def __post_init__(self) -> None:
        if isinstance(self.quality, bool) or not 1 <= self.quality <= 95:
            raise ValueError(f"quality must be an integer from 1 to 95, not {self.quality!r}")
        for name in ("max_pixels", "max_decode_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")


@dataclass(frozen=True, slots=True)
class CompressedImage:
    """The bytes to store for one image, and what was done to produce them."""

    data: bytes
    content_type: str
    width: int
    height: int
    input_format: str
    input_bytes: int
    kept_original: bool
    note: str | None


@dataclass(slots=True)
class _Decoded:
    """A decoded still image, ready to encode, and what is known about its input."""

    image: Image.Image
    input_format: str
    icc: bytes | None
    rotated: bool  # its EXIF orientation was applied
    notes: list[str]


def extension_for(content_type: str) -> str:
    """Return the file extension (with its dot) for a content type, ``.bin`` if unknown."""
    return _EXTENSIONS.get(content_type, ".bin")


def decoded_size(data: bytes, options: CompressOptions = CompressOptions()) -> int:
    """Return the bytes decoding ``data`` takes, read from its header, without decoding.

    Raises CompressionError(``image_too_large``) when the pixel count or the decoded
    size is over its cap. A file that starts like an accepted format but whose header
    cannot be read counts as the whole ``max_decode_bytes``; anything else as 0 (no
    decoder will run on it).
    """
    header = read_header(data)
    if header is None:
        return options.max_decode_bytes if is_accepted_format(data) else 0
    _check_size(header.width, header.height, header.pixel_bytes, options)
    return header.decoded_bytes


def compress_image(data: bytes, options: CompressOptions = CompressOptions()) -> CompressedImage:
    """Compress image bytes by the module's policy; raise CompressionError on bad input."""
    if not data:
        raise CompressionError("the data is empty, not an image", code="not_an_image")
    try:
        return _compress(bytes(data), options)
    except CompressionError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise CompressionError(
            "the image has more pixels than can be decoded safely (the cap is "
            f"max_image_pixels, {options.max_pixels} pixels)",
            code="image_too_large",
        ) from exc
    except MemoryError as exc:
        raise CompressionError(
            "there was not enough memory to compress the image (memory for decoding is "
            f"limited by max_decode_bytes, {_mib(options.max_decode_bytes)})",
            code="image_too_large",
        ) from exc
    except Exception as exc:  # any decoder failure is a property of the bytes
        raise CompressionError(
            f"the image data is corrupt or truncated ({type(exc).__name__}: {exc})",
            code="corrupt_image",
        ) from exc


def timed_compress(data: bytes, options: CompressOptions) -> tuple[CompressedImage, float]:
    """Compress, and measure how long it took (where it ran: a thread or a process)."""
    started = time.perf_counter()
    return compress_image(data, options), time.perf_counter() - started


def _compress(data: bytes, options: CompressOptions) -> CompressedImage:
    decoded_size(data, options)  # refuse from the header, before Pillow reads it
    decoded = _decode(data, options)
    if isinstance(decoded, CompressedImage):
        return decoded
    work, notes = decoded.image, decoded.notes
    out_fmt = "WEBP" if work.mode == "RGBA" else "JPEG"
    params: dict[str, int | bool | bytes] = {"quality": options.quality}
    if out_fmt == "JPEG":
        params.update(optimize=True, progressive=False)
    else:  # libwebp's effort 3 of 6: a fifth faster than its default 4, 0.4 % larger
        params.update(method=3)
    icc = decoded.icc
    if icc:
        if icc[16:20] == _ICC_SPACES[work.mode]:
            params["icc_profile"] = icc
        else:
            notes.append(f"dropped its ICC profile, whose colour space does not match {work.mode}")
    work.info = {}
    buffer = io.BytesIO()
    try:
        work.save(buffer, format=out_fmt, **params)
    except MemoryError:
        raise
    except Exception as exc:  # not the input's fault: keep the class's generic code
        raise CompressionError(f"encoding the image as {out_fmt} failed: {exc}") from exc
    out = buffer.getvalue()
    fmt = decoded.input_format
    if len(out) >= len(data):
        kept = _keep_cleaned(data, decoded, len(out))
        if kept is not None:
            return kept
        notes.append(
            f"compressed output ({len(out)} bytes) was not smaller than the original "
            f"({len(data)} bytes), but the original could not be shown upright without "
            "its EXIF orientation, so the re-encoded image is stored"
        )
    if out_fmt != fmt:
        why = "to keep its transparency" if out_fmt == "WEBP" else "as it has no transparency"
        names = {"WEBP": "WebP"}
        notes.insert(0, f"converted {names.get(fmt, fmt)} to {names.get(out_fmt, out_fmt)} {why}")
    return CompressedImage(
        data=out,
        content_type=_CONTENT_TYPES[out_fmt],
        width=work.width,
        height=work.height,
        input_format=fmt,
        input_bytes=len(data),
        kept_original=False,
        note="; ".join(notes) or None,
    )


def _decode(data: bytes, options: CompressOptions) -> _Decoded | CompressedImage:
    """Decode a still image into one of the modes ``_normalise`` gives; an animation is
    judged by its headers and kept (cleaned) instead.

    Only the returned image stays referenced: the decoded original is freed on return
    when normalising or orienting made a new one.
    """
    with _open(data) as im:
        fmt = "JPEG" if im.format == "MPO" else str(im.format)
        _check_size(im.width, im.height, pixel_bytes(im.mode, im.has_transparency_data), options)
        if fmt == "JPEG":
            _check_scans(data, options.max_scans)
        elif getattr(im, "is_animated", False):
            _check_animation(im, options)
            return _keep_animation(data, fmt, im.size)
        im.load()
        notes: list[str] = []
        icc = im.info.get("icc_profile")
        try:
            oriented = _oriented(im)
        except Exception:  # unreadable EXIF must not lose an otherwise good image
            oriented = im
            notes.append("its EXIF data could not be read, so its orientation was not applied")
        work, mode_note = _normalise(oriented)
        if mode_note:
            notes.append(mode_note)
        icc_bytes = icc if isinstance(icc, bytes) and icc else None
        return _Decoded(work, fmt, icc_bytes, oriented is not im, notes)


def _check_size(width: int, height: int, bytes_per_pixel: int, options: CompressOptions) -> None:
    """Refuse an image with too many pixels, or too many bytes once decoded."""
    pixels = width * height
    if pixels > options.max_pixels:
        raise CompressionError(
            f"the image is {width}x{height} = {pixels} pixels, over the "
            f"{options.max_pixels}-pixel cap (max_image_pixels)",
            code="image_too_large",
        )
    if pixels * bytes_per_pixel > options.max_decode_bytes:
        raise CompressionError(
            f"the image would take {_mib(pixels * bytes_per_pixel)} of memory decoded "
            f"({width}x{height} pixels of {bytes_per_pixel} bytes), over the "
            f"{_mib(options.max_decode_bytes)} memory budget for decoding (max_decode_bytes)",
            code="image_too_large",
        )


def _mib(size: int) -> str:
    return f"{size / MIB:.1f} MiB"


def _check_scans(data: bytes, limit: int) -> None:
    """Refuse a JPEG with more than ``limit`` scans, counted without decoding.

    Each scan of a progressive JPEG makes the decoder pass over the whole image again, so
    a small file with thousands of scans costs minutes of CPU (a "scan bomb"). The scans
    are found the way libjpeg finds them, so stray bytes or fill bytes hide none.
    """
    if count_scans(data, limit) > limit:
        raise CompressionError(
            f"the JPEG has more than {limit} scans (max_jpeg_scans); decoding it would "
            "take far too long",
            code="image_too_complex",
        )


def _check_animation(im: Image.Image, options: CompressOptions) -> None:
    """Refuse animations with too many frames, or too many pixels in all."""
    frames = int(getattr(im, "n_frames", 1))
    if frames > options.max_frames:
        raise CompressionError(
            f"the animation has {frames} frames, over the {options.max_frames}-frame cap "
            "(max_animation_frames)",
            code="too_many_frames",
        )
    total = frames * im.width * im.height
    if total > options.max_animation_pixels:
        raise CompressionError(
            f"the animation has {total} pixels in all ({frames} frames of {im.width}x"
            f"{im.height}), over the {options.max_animation_pixels}-pixel cap "
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


def _keep_animation(data: bytes, fmt: str, size: tuple[int, int]) -> CompressedImage:
    """Keep an animation's frames as they are, without its metadata."""
    try:
        cleaned = strip_metadata(data, fmt)
    except ValueError as exc:
        raise CompressionError(
            f"the animation's structure could not be followed to remove its metadata ({exc})",
            code="corrupt_image",
        ) from exc
    note = "the image is animated; animated images are kept as they are"
    if cleaned != data:
        note += f"; removed its metadata ({len(data) - len(cleaned)} bytes) without re-encoding"
    return _keep(cleaned, fmt, size, note, len(data))


def _keep_cleaned(data: bytes, decoded: _Decoded, encoded_bytes: int) -> CompressedImage | None:
    """Keep a still original, cleaned without re-encoding; None if it cannot be (it needs
    rotating to be upright, or its structure cannot be followed)."""
    if decoded.rotated:
        return None
    try:
        cleaned = strip_metadata(data, decoded.input_format)
    except ValueError:
        return None
    note = (
        f"compressed output ({encoded_bytes} bytes) was not smaller than the original "
        f"({len(data)} bytes); kept the original"
    )
    if cleaned != data:
        note += f", without its metadata ({len(data) - len(cleaned)} bytes, not re-encoded)"
    return _keep(cleaned, decoded.input_format, decoded.image.size, note, len(data))


def _keep(
    data: bytes, fmt: str, size: tuple[int, int], note: str, input_bytes: int
) -> CompressedImage:
    """Store input bytes (cleaned of metadata, pixels untouched)."""
    return CompressedImage(
        data=data,
        content_type=_CONTENT_TYPES[fmt],
        width=size[0],
        height=size[1],
        input_format=fmt,
        input_bytes=input_bytes,
        kept_original=True,
        note=note,
    )
