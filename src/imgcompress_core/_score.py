"""SSIMULACRA2 scores for ``target_quality``, through the optional ``ssimulacra2`` package.

The package (numpy and scipy underneath) is the ``imgcompress[target]`` extra; it is
imported only when a score is asked for, so compression workers that never see a
``target_quality`` do not load it. :func:`available` says whether it is installed.

Scoring a whole photo in pure numpy costs about a second per megapixel, many times the
whole compression. So the quality search scores a *sample*: four tiles of 256 x 256 cut
from the image at its own resolution (:func:`tiles`), one in the middle of each quarter,
their corners on the 16-pixel grid of JPEG's 4:2:0 blocks. Each tile is encoded on its
own (as a small image, so the encoder sees real picture content, not seams between
tiles), decoded, and the tiles are put side by side (:func:`mosaic`) to be scored
against the same mosaic of the original tiles. Compression artefacts are local, so
tiles at full resolution show the ringing, blocking and blurring of the whole image;
scoring a downscaled copy would hide them. Measured on 8 corpus photos (1200 px) in JPEG,
WebP and AVIF at qualities 30-85, the sample scores on average 1.7 points above the whole
image (``SAMPLE_BIAS``; the mean absolute error is the same 1.7, so the sample is high,
rarely low), so the search asks the sample for ``target + SAMPLE_BIAS``. How well the
search then meets targets on the whole corpus is in ``benchmarks/RESULTS.md``.

Transparent images are scored the way the metric's authors score alpha: composited onto
a dark and a light background, and the lower of the two scores counts.
"""

from __future__ import annotations

import importlib.util
import io

from PIL import Image

__all__ = ["SAMPLE_BIAS", "available", "mosaic", "score", "tiles"]

TILE = 256  # a tile's side, a multiple of 16
GRID = 2  # tiles per side of the sample
SAMPLE_BIAS = 1.7  # how much higher the sample scores than the whole image, on average
_BACKGROUNDS = (26, 230)  # 0.1 and 0.9 of full scale, as the metric's alpha mode uses


def available() -> bool:
    """Return True if the ``ssimulacra2`` package (``imgcompress[target]``) is installed."""
    return importlib.util.find_spec("ssimulacra2") is not None


def tiles(image: Image.Image) -> list[Image.Image]:
    """Return the tiles the search scores (the image itself when it is not much larger)."""
    width, height = image.size
    if width < GRID * TILE or height < GRID * TILE or width * height <= 2 * (GRID * TILE) ** 2:
        return [image]
    found = []
    for row in range(GRID):
        top = _aligned((height * (2 * row + 1)) // (2 * GRID) - TILE // 2, height)
        for column in range(GRID):
            left = _aligned((width * (2 * column + 1)) // (2 * GRID) - TILE // 2, width)
            found.append(image.crop((left, top, left + TILE, top + TILE)))
    return found


def mosaic(parts: list[Image.Image], mode: str) -> Image.Image:
    """Put ``tiles``' output side by side again (one image: itself, in ``mode``)."""
    if len(parts) == 1:
        return parts[0] if parts[0].mode == mode else parts[0].convert(mode)
    joined = Image.new(mode, (GRID * TILE, GRID * TILE))
    for index, part in enumerate(parts):
        joined.paste(part.convert(mode), ((index % GRID) * TILE, (index // GRID) * TILE))
    return joined


def _aligned(start: int, extent: int) -> int:
    """A tile's start on the 16-pixel grid, inside the image."""
    return max(0, min(start, extent - TILE)) // 16 * 16


def score(reference: Image.Image, candidate: Image.Image) -> float:
    """Return the SSIMULACRA2 score of ``candidate`` against ``reference`` (same size).

    100 is identical; about 90 is visually lossless, 70 high quality, 50 medium.
    """
    from ssimulacra2 import compute_ssimulacra2

    if reference.mode in ("RGBA", "LA") or candidate.mode in ("RGBA", "LA"):
        return min(
            float(compute_ssimulacra2(_ppm(reference, shade), _ppm(candidate, shade)))
            for shade in _BACKGROUNDS
        )
    return float(compute_ssimulacra2(_ppm(reference), _ppm(candidate)))


def _ppm(image: Image.Image, shade: int | None = None) -> io.BytesIO:
    """The image as RGB in a PPM file (the fastest format to write and read), composited
    onto a grey of ``shade`` when it has alpha."""
    if shade is not None:
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", image.size, (shade, shade, shade))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    elif image.mode != "RGB":
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, format="PPM")
    out.seek(0)
    return out
