"""SSIMULACRA2 scores for ``target_quality``, through the optional ``ssimulacra2`` package.

The package (numpy and scipy underneath) is the ``imgcompress[target]`` extra; it is
imported only when a score is asked for, so compression workers that never see a
``target_quality`` do not load it. :func:`available` says whether it is installed.

Scoring a whole photo in pure numpy costs about a second per megapixel, many times the
whole compression. So the quality search scores a *sample*: a mosaic of tiles cut from
the image at its own resolution (:func:`sample`), spread over a grid, each tile's
corners on the 16-pixel grid of JPEG's 4:2:0 blocks. Compression artefacts are local,
so tiles at full resolution see the same ringing and blocking the whole image has
(scoring a downscaled copy would hide them and over-rate every encoder). How well the
sample's score predicts the whole image's is measured in ``benchmarks/policy.py`` and
reported in ``benchmarks/RESULTS.md``.

Transparent images are scored the way the metric's authors score alpha: composited onto
a dark and a light background, and the lower of the two scores counts.
"""

from __future__ import annotations

import importlib.util
import io

from PIL import Image

__all__ = ["available", "sample", "score"]

TILE = 128  # a tile's side, a multiple of 16
GRID = 3  # tiles per side of the mosaic: GRID x GRID tiles at most
_BACKGROUNDS = (26, 230)  # 0.1 and 0.9 of full scale, as the metric's alpha mode uses


def available() -> bool:
    """Return True if the ``ssimulacra2`` package (``imgcompress[target]``) is installed."""
    return importlib.util.find_spec("ssimulacra2") is not None


def sample(image: Image.Image) -> Image.Image:
    """Return the mosaic of tiles the search scores (the image itself when it is small)."""
    width, height = image.size
    columns = min(GRID, width // TILE)
    rows = min(GRID, height // TILE)
    if columns * rows <= 1 or width * height <= (GRID * TILE) ** 2:
        return image
    mosaic = Image.new(image.mode, (columns * TILE, rows * TILE))
    for row in range(rows):
        top = _aligned((height * (2 * row + 1)) // (2 * rows) - TILE // 2, height)
        for column in range(columns):
            left = _aligned((width * (2 * column + 1)) // (2 * columns) - TILE // 2, width)
            tile = image.crop((left, top, left + TILE, top + TILE))
            mosaic.paste(tile, (column * TILE, row * TILE))
    return mosaic


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
