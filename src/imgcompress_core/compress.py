"""Compress one image's bytes with Pillow, by a documented policy (docs/compression.md).

Decoding (:mod:`._decode`)
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
    EXIF orientation is applied (unreadable EXIF is ignored, and the note says so). Bilevel
    images become greyscale; 16-bit samples are scaled to 8-bit greyscale (divided by 256,
    not clipped; a 16-bit ``tRNS`` colour is not kept); CMYK stays CMYK (in JPEG) and
    greyscale stays greyscale; any other mode becomes RGB. Then the request's
    :class:`~.policy.OutputPolicy`: shrunk to fit ``max_width`` x ``max_height`` (Lanczos,
    after a reduced JPEG decode; never enlarged), flattened onto ``background``
    (:mod:`._shape`). All
    metadata (EXIF, XMP, comments, text chunks) is dropped except the ICC profile, kept
    when its colour space matches the output's, and with ``metadata="copyright"`` the
    rights fields (:mod:`._meta`).

Encoding (:mod:`._encode`)
    By default an image with real transparency (some alpha below 255) becomes lossy WebP
    with alpha at ``quality``, and everything else -- a fully opaque alpha channel is
    dropped -- a baseline, Huffman-optimised JPEG at ``quality`` with 4:2:0 chroma
    subsampling (sharp's defaults), written by libjpeg-turbo through Pillow or, with
    ``CompressOptions.jpeg_encoder="jpegli"`` (``imgcompress[jpegli]``), an RGB one by
    jpegli (grey and CMYK ones stay with Pillow); a plain 4:2:0 or grey JPEG may instead
    be re-quantised without decoding it, by the compiled accelerator when this install
    has it (:mod:`._fast`). The policy's ``format``, ``quality``,
    ``target_quality`` and ``max_bytes`` change that. Animated GIF/WebP/PNG images are not
    re-encoded.

The original is kept when it is smaller
    With no resizing, no flattening and no change of format family (the default policy,
    ``format="original"``, or a format the input already has), an encoded result that is
    not smaller than the input is replaced by the input (``kept_original``) -- cleaned of
    its metadata without re-encoding (``_clean``), so its pixels are the original's. The
    one exception: a still image that needed its EXIF orientation applied cannot be made
    upright without re-encoding, so its re-encoded version is stored even though it is
    larger. An animation keeps its frames as they are. ``width``/``height`` are always
    those of the stored pixels as displayed.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Literal

from PIL import Image

from . import _score, _shape
from ._decode import (
    ACCEPTED_FORMATS,
    MIB,
    Animation,
    Decoded,
    check_size,
    decode,
    mib,
    plain_jpeg,
)
from ._encode import (
    CONTENT_TYPES,
    JPEG_ENCODERS,
    LOSSLESS,
    Encoded,
    Search,
    jpegli_available,
    search,
)
from ._fast import available as fast_available
from ._fast import jpeg_requantised, jpeg_round_trip, requantiser_available
from ._header import is_accepted_format, read_header
from ._keep import keep_animation, keep_cleaned
from ._meta import MAX_ICC, Kept, insert_segments, save_parameters
from .errors import CompressionError
from .policy import PRESETS, OutputPolicy, preflight

__all__ = [
    "ACCEPTED_FORMATS",
    "CompressOptions",
    "CompressedImage",
    "compress_image",
    "decoded_size",
    "extension_for",
    "timed_compress",
]

_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/avif": ".avif",
    "image/png": ".png",
    "image/gif": ".gif",
}
_FAMILY = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "GIF": "png"}  # format="original"
_NAMES = {"jpeg": "JPEG", "webp": "WebP", "avif": "AVIF", "png": "PNG", "gif": "GIF"}
_ICC_SPACES = {"L": b"GRAY", "RGB": b"RGB ", "RGBA": b"RGB ", "CMYK": b"CMYK"}


@dataclass(frozen=True, slots=True)
class CompressOptions:
    """How to compress: the default quality, the caps on what may be decoded, and the
    request's output policy."""

    quality: int = 50  # JPEG/WebP quality, 1..95, when the policy gives none
    max_pixels: int = 50_000_000  # width*height cap, checked from the header before decoding
    max_frames: int = 1000  # frames of an animated GIF/WebP/PNG (kept as they are)
    max_animation_pixels: int = 500_000_000  # width*height*frames of an animation
    max_scans: int = 100  # scans of a (progressive) JPEG, counted before decoding
    # Decoded bytes of the images being compressed at once (Compressor admits images by
    # it), and so of any one image; checked from the header before decoding.
    max_decode_bytes: int = 512 * MIB
    policy: OutputPolicy = field(default_factory=OutputPolicy)  # the request's, per image
    # Who writes JPEGs: libjpeg-turbo (Pillow) with libjpeg's quantisation tables or with
    # N. Robidoux's (smaller at the same perceptual quality, not at the same quality
    # number), or jpegli for RGB ones (imgcompress[jpegli]; Pillow writes grey and CMYK).
    jpeg_encoder: Literal["libjpeg-turbo", "libjpeg-turbo-robidoux", "jpegli"] = "libjpeg-turbo"
    # JPEGs by libjpeg-turbo written progressive (libjpeg's scan script): the same pixels,
    # about 2 % smaller near quality 80 for 2.5 times the encode; jpegli writes baseline only.
    jpeg_progressive: bool = False
    # The faster codecs (imgcompress[fast]) and the compiled accelerators, when installed.
    # False: Pillow decodes and encodes everything, as without them (to rule them out when
    # something looks wrong, or to measure what they save).
    accelerators: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.quality, bool) or not 1 <= self.quality <= 95:
            raise ValueError(f"quality must be an integer from 1 to 95, not {self.quality!r}")
        if self.jpeg_encoder not in JPEG_ENCODERS:
            raise ValueError(
                f"jpeg_encoder must be one of {JPEG_ENCODERS}, not {self.jpeg_encoder!r}"
            )
        if self.jpeg_encoder == "jpegli" and not jpegli_available():
            raise ValueError(
                "jpeg_encoder='jpegli' needs pyjpegli: pip install 'imgcompress[jpegli]'"
            )
        if self.jpeg_progressive and self.jpeg_encoder == "jpegli":
            raise ValueError("jpeg_progressive needs libjpeg-turbo: jpegli writes baseline only")
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
    quality: int | None = None  # the encoder quality used (None: kept, lossless, palette)
    score: float | None = None  # SSIMULACRA2 of the sample, when a target was asked for
    warnings: tuple[str, ...] = ()  # the preset's rules the image breaks, unmet targets


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
    check_size(header.width, header.height, header.pixel_bytes, options)
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
            f"limited by max_decode_bytes, {mib(options.max_decode_bytes)})",
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
    policy = options.policy.effective()
    if policy.target_quality is not None and not _score.available():
        raise CompressionError(
            "target_quality needs the SSIMULACRA2 scorer, which is not installed here: "
            "pip install 'imgcompress[target]'",
            code="target_quality_unavailable",
        )
    quality = policy.quality or options.quality
    if _as_it_is(policy, options) and data.startswith(b"\xff\xd8\xff"):
        fast = _plain_jpeg(data, options, quality)
        if fast is not None:
            return fast
    box = _shape.box(policy)
    decoded = decode(
        data,
        options,
        box=box,
        keep_rights=policy.metadata == "copyright",
        accelerated=options.accelerators,
    )
    if isinstance(decoded, Animation):
        return keep_animation(data, decoded, policy)
    notes = decoded.notes
    work, resized = _shape.fit(decoded, box, notes)
    work, flattened = _shape.flatten(work, policy, notes)
    formats = _formats(policy, work.mode, decoded.input_format, notes)
    family = _FAMILY[decoded.input_format]
    same_family = policy.format in (None, "original") or formats == [family]
    keep_rule = not resized and not flattened and same_family
    want = Search(
        quality,
        policy.target_quality,
        policy.max_bytes,
        options.jpeg_encoder,
        options.jpeg_progressive,
        options.accelerators,
    )
    try:
        best = _best(work, formats, want, decoded, notes)
    except CompressionError as exc:
        kept = keep_cleaned(data, decoded, None) if keep_rule else None
        cap = policy.max_bytes or 0
        if exc.code != "max_bytes_unreachable" or kept is None or len(kept.data) > cap:
            raise
        return _with_warnings(kept, policy, work)
    if keep_rule and len(best.data) >= len(data):
        kept = keep_cleaned(data, decoded, len(best.data))
        if kept is not None:
            return _with_warnings(kept, policy, work)
        notes.append(
            f"compressed output ({len(best.data)} bytes) was not smaller than the original "
            f"({len(data)} bytes), but the original could not be shown upright without "
            "its EXIF orientation, so the re-encoded image is stored"
        )
    if best.format != family or decoded.input_format == "GIF":
        notes.insert(0, _conversion_note(decoded.input_format, best.format, policy))
    if best.format == "png":
        notes.append("lossless PNG" if best.level == LOSSLESS else f"{best.level}-colour PNG")
    warnings = _preflight(policy, work, best.format, len(best.data)) + best.notes
    return CompressedImage(
        data=best.data,
        content_type=CONTENT_TYPES[best.format],
        width=work.width,
        height=work.height,
        input_format=decoded.input_format,
        input_bytes=len(data),
        kept_original=False,
        note="; ".join(notes) or None,
        quality=None if best.format == "png" else best.level,
        score=None if best.score is None else round(best.score, 2),
        warnings=warnings,
    )


def _as_it_is(policy: OutputPolicy, options: CompressOptions) -> bool:
    """Whether the policy re-encodes a JPEG as it is: JPEG at one quality, by
    libjpeg-turbo, with nothing to resize, search, check or keep but the ICC profile."""
    return (
        policy.format in (None, "original", "jpeg")
        and policy.max_width is None
        and policy.max_height is None
        and policy.target_quality is None
        and policy.max_bytes is None
        and policy.preset is None
        and policy.metadata != "copyright"
        and options.jpeg_encoder == "libjpeg-turbo"
        and not options.jpeg_progressive
    )


def _plain_jpeg(data: bytes, options: CompressOptions, quality: int) -> CompressedImage | None:
    """Re-encode a JPEG that needs no turn by the faster paths of :mod:`._fast`
    (coefficients re-quantised, or pixels through ``imagecodecs`` with Pillow's result);
    None to take the Pillow path instead."""
    if not options.accelerators or not (requantiser_available() or fast_available()):
        return None
    plain = plain_jpeg(data, options)
    if plain is None:
        return None
    icc = plain.icc
    if icc is not None and (icc[16:20] != _ICC_SPACES[plain.mode] or len(icc) > MAX_ICC):
        return None  # the Pillow path says why it drops it, or fails
    encoded = jpeg_requantised(data, quality)
    if encoded is None:
        encoded = jpeg_round_trip(data, plain.mode, plain.size, quality)
    if encoded is None:
        return None
    if icc is not None:
        encoded = insert_segments(encoded, Kept(), icc=icc)
    if len(encoded) >= len(data):
        kept = keep_cleaned(data, plain, len(encoded))
        if kept is not None:
            return kept
    width, height = plain.size
    return CompressedImage(
        data=encoded,
        content_type="image/jpeg",
        width=width,
        height=height,
        input_format="JPEG",
        input_bytes=len(data),
        kept_original=False,
        note=None,
        quality=quality,
    )


def _formats(policy: OutputPolicy, mode: str, input_format: str, notes: list[str]) -> list[str]:
    """The output formats to try (the smallest result wins)."""
    transparent = mode == "RGBA"
    accepted = PRESETS[policy.preset].formats if policy.preset else None
    fmt = policy.format
    if fmt is None:
        return ["webp" if transparent else "jpeg"]
    if fmt == "auto":
        allowed = [f for f in ("jpeg", "webp", "avif") if accepted is None or f in accepted]
        return [f for f in allowed if not (transparent and f == "jpeg")]
    if fmt == "original":
        family = _FAMILY[input_format]
        if accepted is None or family in accepted:
            return [family]
        fallback = "png" if transparent else "jpeg"
        notes.append(f"the {policy.preset} preset does not accept {_NAMES[family]}")
        return [fallback]
    return [fmt]


def _best(
    work: Image.Image, formats: list[str], want: Search, decoded: Decoded, notes: list[str]
) -> Encoded:
    """Search each format; return the smallest output (the first failure if none fits)."""
    results: list[Encoded] = []
    failure: CompressionError | None = None
    for fmt in formats:
        pixels, extra = _prepared(work, fmt, decoded, notes)
        try:
            encoded = search(pixels, fmt, want, extra)
        except CompressionError as exc:
            if exc.code != "max_bytes_unreachable":
                raise
            failure = failure or exc
            continue
        if fmt == "jpeg" and decoded.rights.iptc:
            data = insert_segments(encoded.data, decoded.rights, iptc_only=True)
            encoded = Encoded(data, fmt, encoded.level, encoded.score, encoded.notes)
        results.append(encoded)
    if not results:
        assert failure is not None
        raise failure
    return min(results, key=lambda e: len(e.data))


def _prepared(
    work: Image.Image, fmt: str, decoded: Decoded, notes: list[str]
) -> tuple[Image.Image, dict[str, object]]:
    """The pixels in a mode ``fmt`` writes, and the save parameters: ICC and rights."""
    if fmt != "jpeg" and work.mode in ("CMYK", "L") and not (fmt == "png" and work.mode == "L"):
        if work.mode == "CMYK":
            notes.append(f"converted CMYK to RGB for {_NAMES[fmt]}")
        work = work.convert("RGB")
    extra = save_parameters(decoded.rights, fmt)
    icc = decoded.icc
    if icc:
        if icc[16:20] == _ICC_SPACES[work.mode]:
            extra["icc_profile"] = icc
        elif not any(note.startswith("dropped its ICC") for note in notes):
            notes.append(f"dropped its ICC profile, whose colour space does not match {work.mode}")
    work.info = {}
    return work, extra


def _conversion_note(input_format: str, output: str, policy: OutputPolicy) -> str:
    source = _NAMES.get(input_format.lower(), input_format)
    if policy.format is not None:
        return f"converted {source} to {_NAMES[output]} (format={policy.format})"
    why = "to keep its transparency" if output == "webp" else "as it has no transparency"
    return f"converted {source} to {_NAMES[output]} {why}"


def _preflight(policy: OutputPolicy, pixels: Image.Image, fmt: str, size: int) -> tuple[str, ...]:
    """The preset's warnings for an output of ``pixels`` as ``fmt`` in ``size`` bytes."""
    if policy.preset is None:
        return ()
    white = _shape.white_border(pixels) if PRESETS[policy.preset].white_background else None
    return preflight(
        policy,
        width=pixels.width,
        height=pixels.height,
        output_format=fmt,
        output_bytes=size,
        white_border=white,
    )


def _with_warnings(
    kept: CompressedImage, policy: OutputPolicy, work: Image.Image
) -> CompressedImage:
    """A kept original with the preset's warnings about it."""
    fmt = _FAMILY[kept.input_format] if kept.input_format != "GIF" else "gif"
    warnings = _preflight(policy, work, fmt, len(kept.data))
    if not warnings:
        return kept
    return dataclasses.replace(kept, warnings=warnings)
