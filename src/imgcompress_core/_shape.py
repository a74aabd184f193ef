"""What an output policy does to the pixels before encoding: shrink them into its box
(never enlarge), flatten transparency onto its background; and the measure a preset's
white-background check reads from them."""

from __future__ import annotations

from PIL import Image, ImageChops

from ._decode import Decoded
from .policy import OutputPolicy

__all__ = ["box", "fit", "flatten", "white_border"]


def box(policy: OutputPolicy) -> tuple[int, int] | None:
    """The box the output must fit in, or None for no size cap."""
    if policy.max_width is None and policy.max_height is None:
        return None
    return (policy.max_width or 1 << 30, policy.max_height or 1 << 30)


def fit(
    decoded: Decoded, limit: tuple[int, int] | None, notes: list[str]
) -> tuple[Image.Image, bool]:
    """Shrink the image to fit ``limit`` (a :func:`box`), keeping its aspect ratio; never
    enlarge it."""
    image = decoded.image
    if limit is None:
        return image, False
    width, height = image.size
    scale = min(limit[0] / width, limit[1] / height)
    if scale >= 1:
        return image, False
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    full = f"{round(width * decoded.reduced)}x{round(height * decoded.reduced)}"
    notes.append(f"shrunk from {full} to {size[0]}x{size[1]}")
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0), True


def flatten(image: Image.Image, policy: OutputPolicy, notes: list[str]) -> tuple[Image.Image, bool]:
    """Flatten a transparent image onto the policy's background colour (white for JPEG)."""
    colour = policy.background
    if image.mode != "RGBA" or colour == "keep":
        return image, False
    if colour is None:
        if policy.format != "jpeg":
            return image, False
        colour = "#ffffff"
    flat = Image.new("RGB", image.size, colour)
    flat.paste(image, mask=image.getchannel("A"))
    notes.append(f"flattened its transparency onto {colour}")
    return flat, True


def white_border(image: Image.Image) -> float:
    """The share of the pixels on the image's border (1/200 of its short side, at least
    one pixel wide) whose every channel is at least 250: white, give or take JPEG noise."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    width, height = rgb.size
    band = max(1, min(width, height) // 200)
    boxes = [(0, 0, width, band), (0, height - band, width, height)]
    if height > 2 * band:
        boxes += [(0, band, band, height - band), (width - band, band, width, height - band)]
    white = total = 0
    for edge in boxes:
        red, green, blue = rgb.crop(edge).split()
        darkest = ImageChops.darker(ImageChops.darker(red, green), blue)
        white += sum(darkest.histogram()[250:])
        total += darkest.width * darkest.height
    return white / total if total else 1.0
