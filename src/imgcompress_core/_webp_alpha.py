"""Lossy WebP with a transparent plane, for about half of libwebp's own alpha work.

A lossy WebP keeps transparency in an ``ALPH`` chunk beside the colour's ``VP8 `` chunk:
the alpha plane, losslessly compressed (WebP lossless, VP8L), optionally after a
spatial filter. libwebp writes it (at Pillow's settings: ``method=3``, ``alpha_quality``
100) by compressing the plane both unfiltered and through its estimated best filter and
keeping the smaller, and the unfiltered trial dominates: for the corpus's cut-outs the
alpha costs more than the colour (benchmarks/RESULTS.md, section 9).

:func:`encode_rgba` writes the same picture with one cheap trial: libwebp encodes the
image with ``alpha_quality=0`` (the colour's chunk is unchanged, as only the alpha
chunk depends on that setting; the tests hold it to Pillow's pixels), then its alpha
chunk is replaced by the exact plane, run through the gradient filter of the WebP
container specification and compressed by WebP lossless at effort 1. The pixels are
Pillow's own output's, alpha included; the file is within a few per cent of its size.

Needs numpy (installed with imgcompress[fast]); without it, or for any image this does
not take, :func:`encode_rgba` returns None and Pillow encodes the image as usual.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING

from PIL import Image

from ._riff import webp_chunks, webp_file

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["available", "encode_rgba", "gradient_residuals"]

_STRIP_ROWS = 256  # rows filtered at a time: int16 scratch of 2 bytes a pixel, bounded
_GRADIENT_LOSSLESS = 0b0000_1101  # ALPH header: no pre-processing, gradient filter, VP8L
_VP8L_HEADER = 5  # signature byte, then 14-bit width and height, alpha hint, version


@cache
def available() -> bool:
    """Return whether numpy is installed (it comes with imgcompress[fast])."""
    return importlib.util.find_spec("numpy") is not None


def encode_rgba(
    image: Image.Image, quality: int, method: int, extra: Mapping[str, object]
) -> bytes | None:
    """Encode an RGBA ``image`` as lossy WebP at ``quality`` and ``method`` with ``extra``
    save parameters, with the alpha plane lossless; None when Pillow should do it."""
    if image.mode != "RGBA" or not available():
        return None
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=quality, method=method, alpha_quality=0, **extra)
    chunks = webp_chunks(buffer.getvalue())
    if not any(name == b"ALPH" for name, _ in chunks):  # fully opaque: libwebp wrote no plane
        return buffer.getvalue()
    import numpy as np

    alpha = np.asarray(image.getchannel("A"))
    residuals = Image.fromarray(gradient_residuals(alpha))
    lossless = io.BytesIO()
    residuals.save(lossless, format="WEBP", lossless=True, quality=0, method=1)
    stream = dict(webp_chunks(lossless.getvalue())).get(b"VP8L", b"")
    if len(stream) <= _VP8L_HEADER or stream[0] != 0x2F:
        return None
    plane = bytes((_GRADIENT_LOSSLESS,)) + stream[_VP8L_HEADER:]
    return webp_file((name, plane if name == b"ALPH" else body) for name, body in chunks)


def gradient_residuals(alpha: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Return a plane's residuals under the WebP container's gradient filter: each value
    less ``clip(left + above - above-left)`` modulo 256; the first row is predicted from
    the left, the first column from above, the first value from 0."""
    import numpy as np

    height = alpha.shape[0]
    out = np.empty_like(alpha)
    out[0, 0] = alpha[0, 0]
    out[0, 1:] = alpha[0, 1:] - alpha[0, :-1]  # uint8 arithmetic wraps modulo 256
    out[1:, 0] = alpha[1:, 0] - alpha[:-1, 0]
    for top in range(1, height, _STRIP_ROWS):
        bottom = min(top + _STRIP_ROWS, height)
        rows = alpha[top:bottom].astype(np.int16)
        above = alpha[top - 1 : bottom - 1].astype(np.int16)
        predicted = rows[:, :-1] + above[:, 1:] - above[:, :-1]
        np.clip(predicted, 0, 255, out=predicted)
        out[top:bottom, 1:] = (rows[:, 1:] - predicted).astype(np.uint8)
    return out
