"""SSIM of luma, in pure Pillow (the venv has no numpy).

The method, so numbers can be compared with other tools:

- Both images are opened, EXIF orientation is applied, and an image with transparency is
  composited over mid-grey (what a viewer sees on a grey page), then converted to 8-bit
  luma (``convert("L")``: ITU-R 601 weights), at full resolution, no downscaling.
- Local statistics come from uniform 8x8 windows placed every 4 pixels in both directions
  (four grids of non-overlapping 8x8 blocks, offset by 0 or 4 pixels), computed with
  ``Image.reduce(8)`` on float images: mean, variance (population) and covariance.
- Each window gives the usual SSIM with C1 = (0.01*255)^2 and C2 = (0.03*255)^2; the
  result is the mean over all windows.

This is Wang et al.'s 8x8-window SSIM at stride 4 rather than the 11x11 Gaussian window
of scikit-image, so absolute values differ slightly (by about 0.01) from those tools; it
is the same method for every approach in a run, which is what the comparison needs.
Work is done in horizontal strips so a 12-megapixel image needs about 20 MB, not 250.
"""

from __future__ import annotations

import io
import math

from PIL import Image, ImageMath, ImageOps

__all__ = ["luma", "ssim", "ssim_bytes"]

_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2
_WINDOW = 8
_STRIP = 256  # rows per strip, a multiple of the window


def luma(data: bytes) -> Image.Image:
    """Decode image bytes to oriented 8-bit luma, transparency composited over grey."""
    with Image.open(io.BytesIO(data)) as opened:
        im = ImageOps.exif_transpose(opened)
        if im.has_transparency_data:
            rgba = im.convert("RGBA")
            grey = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
            grey.alpha_composite(rgba)
            im = grey
        return im.convert("L")


def _window_sums(x: Image.Image, y: Image.Image) -> tuple[float, int]:
    """Return (sum of SSIM over the 8x8 blocks of this strip, number of blocks)."""
    fx, fy = x.convert("F"), y.convert("F")
    stats = [
        fx.reduce(_WINDOW),
        fy.reduce(_WINDOW),
        ImageMath.lambda_eval(lambda a: a["x"] * a["x"], x=fx).reduce(_WINDOW),
        ImageMath.lambda_eval(lambda a: a["y"] * a["y"], y=fy).reduce(_WINDOW),
        ImageMath.lambda_eval(lambda a: a["x"] * a["y"], x=fx, y=fy).reduce(_WINDOW),
    ]
    mx, my, xx, yy, xy = stats
    ssim_map = ImageMath.lambda_eval(
        lambda a: (
            (2 * a["mx"] * a["my"] + _C1)
            * (2 * (a["xy"] - a["mx"] * a["my"]) + _C2)
            / (
                (a["mx"] * a["mx"] + a["my"] * a["my"] + _C1)
                * (a["xx"] - a["mx"] * a["mx"] + a["yy"] - a["my"] * a["my"] + _C2)
            )
        ),
        mx=mx,
        my=my,
        xx=xx,
        yy=yy,
        xy=xy,
    )
    values = ssim_map.getdata()
    return float(sum(values)), len(values)


def ssim(reference: Image.Image, other: Image.Image) -> float:
    """Return the mean SSIM of two same-sized 8-bit luma images (NaN if sizes differ)."""
    if reference.size != other.size or min(reference.size) < _WINDOW + 4:
        return math.nan
    total, count = 0.0, 0
    for dx in (0, _WINDOW // 2):
        for dy in (0, _WINDOW // 2):
            width = (reference.width - dx) // _WINDOW * _WINDOW
            height = (reference.height - dy) // _WINDOW * _WINDOW
            for top in range(dy, dy + height, _STRIP):
                box = (dx, top, dx + width, min(top + _STRIP, dy + height))
                part_sum, part_count = _window_sums(reference.crop(box), other.crop(box))
                total += part_sum
                count += part_count
    return total / count if count else math.nan


def ssim_bytes(original: bytes, compressed: bytes) -> float:
    """Return the luma SSIM of compressed image bytes against the original's."""
    return ssim(luma(original), luma(compressed))
