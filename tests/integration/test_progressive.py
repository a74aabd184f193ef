"""jpeg_progressive: libjpeg-turbo writes every JPEG progressive (libjpeg's scan script,
Huffman-optimised per scan). The scans only reorder the same quantised coefficients, so
the pixels are the baseline JPEG's and the file is smaller; a plain JPEG no longer takes
the imagecodecs path (baseline only), and jpegli (baseline only) is refused with it."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops
from pydantic import ValidationError

from imgcompress_core import compress
from imgcompress_core.compress import CompressedImage, CompressOptions, compress_image
from imgcompress_core.policy import OutputPolicy
from imgcompress_core.settings import Settings
from policy_kit import CORPUS, needs_corpus, photo, save

NAMES = [
    "j00_Bridge_by_Sander_Klootwi.jpg",
    "j22_LadyBird.jpg",
    "j31_DarkestHour.jpg",
    "j39_hubble_deep_field.jpg",
]


def run(
    data: bytes, *, progressive: bool, encoder: str = "libjpeg-turbo", **policy: object
) -> CompressedImage:
    options = CompressOptions(
        jpeg_encoder=encoder,  # type: ignore[arg-type]
        jpeg_progressive=progressive,
        policy=OutputPolicy(**policy),  # type: ignore[arg-type]
    )
    return compress_image(data, options)


def opened(result: CompressedImage) -> Image.Image:
    im = Image.open(io.BytesIO(result.data))
    im.load()
    return im


@pytest.mark.parametrize("encoder", ["libjpeg-turbo", "libjpeg-turbo-robidoux"])
@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_the_same_pixels_written_progressive(
    encoder: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain JPEG (the input the imagecodecs path takes when baseline) comes out
    progressive, decoding to exactly the baseline output's pixels (the pixel path's: the
    compiled accelerator, which re-quantises instead, is switched off)."""
    monkeypatch.setattr(compress, "jpeg_requantised", lambda data, quality: None)
    data = save(photo().convert(mode), "JPEG", quality=95)
    baseline = opened(run(data, progressive=False, encoder=encoder))
    progressive = opened(run(data, progressive=True, encoder=encoder))
    assert progressive.info.get("progressive") and not baseline.info.get("progressive")
    assert progressive.mode == baseline.mode == mode
    assert ImageChops.difference(progressive, baseline).getbbox() is None


def test_other_formats_ignore_it() -> None:
    transparent = photo().convert("RGBA")
    transparent.putalpha(128)
    result = run(save(transparent, "PNG"), progressive=True)
    assert result.content_type == "image/webp"


@needs_corpus
def test_photos_at_quality_80_are_smaller() -> None:
    """Progressive scans code the same coefficients in fewer bytes near quality 80
    (sharp's default): 3 % fewer over these photos, per photo from 5 % fewer to 3 % more."""
    sizes = {False: 0, True: 0}
    for name in NAMES:
        with Image.open(CORPUS / name) as im:
            im.draft("RGB", (1200, 1200))
            data = save(im.convert("RGB"), "PNG")
        for progressive in sizes:
            sizes[progressive] += len(run(data, progressive=progressive, quality=80).data)
    assert sizes[True] < 0.99 * sizes[False], sizes


def test_max_bytes_counts_the_progressive_file() -> None:
    """The byte cap is searched on the file that is stored: progressive, and fitting."""
    data = save(photo(), "JPEG", quality=95)
    cap = len(run(data, progressive=True, quality=80).data) * 3 // 4
    result = run(data, progressive=True, quality=80, max_bytes=cap)
    assert len(result.data) <= cap and result.quality is not None and result.quality < 80
    assert opened(result).info.get("progressive")


def test_jpegli_with_progressive_is_refused() -> None:
    """jpegli writes baseline JPEGs only: the options and the settings say so at once."""
    with pytest.raises(ValueError, match="jpeg_progressive"):
        CompressOptions(jpeg_encoder="jpegli", jpeg_progressive=True)
    with pytest.raises(ValidationError, match="jpeg_progressive"):
        Settings(jpeg_encoder="jpegli", jpeg_progressive=True)
