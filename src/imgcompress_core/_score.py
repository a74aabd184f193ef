"""SSIMULACRA2 scores for ``target_quality``, by :mod:`._ssimulacra2` (numpy and scipy).

numpy and scipy are the ``imgcompress[target]`` extra; they are imported only when a
score is asked for, so compression workers that never see a ``target_quality`` do not
load them. :func:`available` says whether they are installed. :func:`reference`
prepares an original once for the many candidates a search scores against it.

Scoring a whole photo costs about 0.06 s per megapixel, several times a whole JPEG
compression, and a search scores two or three candidates. So the quality search scores a
*sample*: tiles cut from the image at its own resolution (:func:`tiles`), spread evenly
over it (the middle of each cell of a 3 x 3 grid), their corners on the 16-pixel grid of
JPEG's 4:2:0 blocks; 160 px tiles for JPEG, 256 px for WebP and AVIF, whose own encodes
cost several times more (``LAYOUTS``). Each tile is encoded on its own (as a small
image, so the encoder sees real picture content, not seams between tiles), decoded, and
the tiles are put side by side (:func:`mosaic`) to be scored against the same mosaic of
the original tiles, prepared once per search (:func:`reference`). Compression artefacts
are local, so tiles at full resolution show the ringing, blocking and blurring of the
whole image; scoring a downscaled copy would hide them. The sample scores a little
higher than the whole image, more so at low scores; :func:`sample_bias` is that excess
as measured on the corpus (1200 px), per codec, and the search takes it off. An image
not much larger than 512 x 512 is scored whole. How well the search then meets targets
on the whole corpus is in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
from collections.abc import Mapping
from typing import Protocol

from PIL import Image

__all__ = ["Scorer", "available", "mosaic", "reference", "sample_bias", "score", "tiles"]

TILE = 256  # a tile's side (a multiple of 16), unless the codec's layout says otherwise
GRID = 2  # tiles per side of the sample, unless the codec's layout says otherwise
# (tiles per side, side) by codec. Tiles spread over more of the image err less: at
# 1200 px, 3 x 3 tiles of 160 px cost JPEG's search no more than 2 x 2 of 256 and err
# half as much; WebP's and AVIF's own encodes cost several times JPEG's, so their
# searches can afford 3 x 3 tiles of 256. An image too small for its layout gets fewer
# tiles per side (at least 2).
LAYOUTS: Mapping[str, tuple[int, int]] = {"jpeg": (3, 160), "webp": (3, 256), "avif": (3, 256)}
# A transparent image is scored twice per candidate (on a dark and a light background),
# so its sample is JPEG's smaller one whatever the codec.
ALPHA_LAYOUT = (3, 160)
# How much higher the sample scores than the whole image, on average, per codec, at a few
# whole-image scores (measured at 63-76 on 9-13 corpus photos, 1200 px; the ends of each
# table follow the 2 x 2 sample's trend, benchmarks/policy.py --only curves). WebP's
# adds 0.3 points to its mean for its wider spread.
_SAMPLE_BIAS: Mapping[str, tuple[tuple[float, float], ...]] = {
    "jpeg": ((40.0, 3.0), (70.0, 1.55), (90.0, 0.5)),
    "webp": ((40.0, 2.7), (70.0, 1.6), (90.0, 0.45)),
    "avif": ((40.0, 1.2), (70.0, 0.75), (90.0, 0.2)),
}


class Scorer(Protocol):
    """An original prepared for scoring: :func:`reference`'s answer."""

    def score(self, candidate: Image.Image) -> float:
        """Return the SSIMULACRA2 score of ``candidate`` (the original's size)."""
        ...


def available() -> bool:
    """Return True if numpy and scipy (``imgcompress[target]``) are installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("numpy", "scipy"))


def tiles(image: Image.Image, fmt: str = "jpeg") -> list[Image.Image]:
    """Return the tiles the search for ``fmt`` scores (the image itself when it is not
    much larger than 2 x 2 tiles)."""
    width, height = image.size
    transparent = image.mode in ("RGBA", "LA", "PA")
    grid, side = ALPHA_LAYOUT if transparent else LAYOUTS.get(fmt, (GRID, TILE))
    grid = min(grid, width // side, height // side)
    if grid < 2 or width * height <= 2 * (GRID * TILE) ** 2:
        return [image]
    found = []
    for row in range(grid):
        top = _aligned((height * (2 * row + 1)) // (2 * grid) - side // 2, height, side)
        for column in range(grid):
            left = _aligned((width * (2 * column + 1)) // (2 * grid) - side // 2, width, side)
            found.append(image.crop((left, top, left + side, top + side)))
    return found


def mosaic(parts: list[Image.Image], mode: str) -> Image.Image:
    """Put ``tiles``' output side by side again (one image: itself, in ``mode``)."""
    if len(parts) == 1:
        return parts[0] if parts[0].mode == mode else parts[0].convert(mode)
    grid, side = math.isqrt(len(parts)), parts[0].width
    joined = Image.new(mode, (grid * side, grid * side))
    for index, part in enumerate(parts):
        joined.paste(part.convert(mode), ((index % grid) * side, (index // grid) * side))
    return joined


def sample_bias(fmt: str, score: float) -> float:
    """Return how much higher the sample of an image scores, on average, than the whole
    image when it is encoded as ``fmt`` to about ``score``."""
    points = _SAMPLE_BIAS.get(fmt, ((0.0, 0.0),))
    if score <= points[0][0]:
        return points[0][1]
    for (s0, b0), (s1, b1) in itertools.pairwise(points):
        if score <= s1:
            return b0 + (b1 - b0) * (score - s0) / (s1 - s0)
    return points[-1][1]


def _aligned(start: int, extent: int, side: int) -> int:
    """A tile's start on the 16-pixel grid, inside the image."""
    return max(0, min(start, extent - side)) // 16 * 16


def reference(original: Image.Image) -> Scorer:
    """Return ``original`` prepared to score candidates of its size against it.

    Transparent images are scored the way the metric's authors score alpha: composited
    onto a dark and a light background, the lower of the two scores counting."""
    from ._ssimulacra2 import Reference

    return Reference(original)


def score(original: Image.Image, candidate: Image.Image) -> float:
    """Return the SSIMULACRA2 score of ``candidate`` against ``original`` (same size).

    100 is identical; about 90 is visually lossless, 70 high quality, 50 medium.
    """
    return reference(original).score(candidate)
