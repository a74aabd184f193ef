"""Storing the input instead of an encoding: an animation, or an original that is smaller.

The bytes are cleaned of metadata without re-encoding (:mod:`._clean`), so the pixels
are the original's; with ``metadata="copyright"`` a kept JPEG gets its rights fields
back (:mod:`._meta`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Protocol

from ._clean import strip_metadata
from ._decode import Animation
from ._meta import Kept, insert_segments
from .errors import CompressionError
from .policy import OutputPolicy

if TYPE_CHECKING:
    from .compress import CompressedImage

__all__ = ["INPUT_TYPES", "keep", "keep_animation", "keep_cleaned"]


class Still(Protocol):
    """What keeping a still original needs to know of it (a Decoded, a PlainJpeg)."""

    @property
    def input_format(self) -> str:
        """JPEG, PNG, WEBP or GIF."""

    @property
    def size(self) -> tuple[int, int]:
        """The pixel size, upright."""

    @property
    def rotated(self) -> bool:
        """Whether its EXIF orientation had to be applied."""

    @property
    def rights(self) -> Kept:
        """The rights metadata to keep."""


INPUT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


def keep_animation(data: bytes, animation: Animation, policy: OutputPolicy) -> CompressedImage:
    """Keep an animation's frames as they are, without its metadata."""
    fmt = animation.input_format
    try:
        cleaned = strip_metadata(data, fmt)
    except ValueError as exc:
        raise CompressionError(
            f"the animation's structure could not be followed to remove its metadata ({exc})",
            code="corrupt_image",
        ) from exc
    if policy.max_bytes is not None and len(cleaned) > policy.max_bytes:
        raise CompressionError(
            f"the image is animated, and animations are kept as they are: at {len(cleaned)} "
            f"bytes it does not fit max_bytes ({policy.max_bytes} bytes)",
            code="max_bytes_unreachable",
        )
    note = "the image is animated; animated images are kept as they are"
    if cleaned != data:
        note += f"; removed its metadata ({len(data) - len(cleaned)} bytes) without re-encoding"
    warnings: tuple[str, ...] = ()
    if policy.fields_set().keys() - {"metadata", "quality", "preset"}:
        warnings = ("the output policy was not applied: animated images are kept as they are",)
    return dataclasses.replace(
        keep(cleaned, fmt, animation.size, note, len(data)), warnings=warnings
    )


def keep_cleaned(data: bytes, decoded: Still, encoded_bytes: int | None) -> CompressedImage | None:
    """Keep a still original, cleaned without re-encoding; None if it cannot be (it needs
    rotating to be upright, or its structure cannot be followed)."""
    if decoded.rotated:
        return None
    try:
        cleaned = strip_metadata(data, decoded.input_format)
    except ValueError:
        return None
    if decoded.rights and decoded.input_format == "JPEG":
        cleaned = insert_segments(cleaned, decoded.rights)
    if encoded_bytes is None:
        note = "no encoding fits max_bytes, but the original does; kept the original"
    else:
        note = (
            f"compressed output ({encoded_bytes} bytes) was not smaller than the original "
            f"({len(data)} bytes); kept the original"
        )
    if len(cleaned) < len(data):
        note += f", without its metadata ({len(data) - len(cleaned)} bytes, not re-encoded)"
    return keep(cleaned, decoded.input_format, decoded.size, note, len(data))


def keep(
    data: bytes, fmt: str, size: tuple[int, int], note: str, input_bytes: int
) -> CompressedImage:
    """Store input bytes (cleaned of metadata, pixels untouched)."""
    from .compress import CompressedImage  # defined there, with the encoder's results

    return CompressedImage(
        data=data,
        content_type=INPUT_TYPES[fmt],
        width=size[0],
        height=size[1],
        input_format=fmt,
        input_bytes=input_bytes,
        kept_original=True,
        note=note,
    )
