"""Our SSIMULACRA2 (imgcompress_core._ssimulacra2) against the ``ssimulacra2`` package.

The package (pure numpy, float64, through image files) is the oracle: on real corpus
photos, encoded in each lossy format at several qualities, our float32 scores must be
within TOLERANCE of its scores. Measured when written: at most 0.03 points apart.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image
from ssimulacra2 import compute_ssimulacra2

from imgcompress_core import _score
from imgcompress_core._encode import encode
from policy_kit import CORPUS, needs_corpus

TOLERANCE = 0.1  # score points; a search step is about 0.5
PHOTOS = ("j00_Bridge_by_Sander_Klootwi.jpg", "j16_Aqua.jpg", "j30_ColorfulCups.jpg")
CUTOUTS = ("p05_Picture_0B_by_freesp_a.png", "p08_Kite_a.png")
SETTINGS = (("jpeg", 30), ("jpeg", 75), ("webp", 50), ("avif", 40), ("avif", 85))


def oracle(original: Image.Image, candidate: Image.Image, shade: int | None = None) -> float:
    """The package's score, through PPM files (onto a grey of ``shade`` with alpha)."""

    def ppm(image: Image.Image) -> io.BytesIO:
        if shade is not None:
            flat = Image.new("RGB", image.size, (shade, shade, shade))
            rgba = image.convert("RGBA")
            flat.paste(rgba, mask=rgba.getchannel("A"))
            image = flat
        out = io.BytesIO()
        image.convert("RGB").save(out, format="PPM")
        out.seek(0)
        return out

    return float(compute_ssimulacra2(ppm(original), ppm(candidate)))


def decoded(image: Image.Image, fmt: str, quality: int) -> Image.Image:
    with Image.open(io.BytesIO(encode(image, fmt, quality, {}))) as out:
        out.load()
        return out.convert(image.mode)


def sample(name: str) -> Image.Image:
    """The search's sample of a corpus image: its tiles side by side."""
    with Image.open(CORPUS / name) as im:
        im.load()
        image = im.convert("RGBA" if im.mode in ("RGBA", "LA", "P") else "RGB")
    return _score.mosaic(_score.tiles(image), image.mode)


@needs_corpus
@pytest.mark.usefixtures("scorer")
@pytest.mark.parametrize("name", PHOTOS)
def test_scores_equal_the_package_on_corpus_photos(name: str) -> None:
    original = sample(name)
    reference = _score.reference(original)  # prepared once, reused for every candidate
    for fmt, quality in SETTINGS:
        candidate = decoded(original, fmt, quality)
        mine, theirs = reference.score(candidate), oracle(original, candidate)
        assert abs(mine - theirs) <= TOLERANCE, (fmt, quality, mine, theirs)


@needs_corpus
@pytest.mark.usefixtures("scorer")
@pytest.mark.parametrize("size", [(301, 217), (90, 70)])  # six scales; four (fewer weights)
def test_odd_and_small_whole_images_score_as_the_package(size: tuple[int, int]) -> None:
    with Image.open(CORPUS / "j22_LadyBird.jpg") as im:
        im.draft("RGB", (400, 300))
        original = im.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    for fmt, quality in (("jpeg", 40), ("webp", 70)):
        candidate = decoded(original, fmt, quality)
        mine = _score.score(original, candidate)
        assert abs(mine - oracle(original, candidate)) <= TOLERANCE, (fmt, quality)


@needs_corpus
@pytest.mark.usefixtures("scorer")
@pytest.mark.parametrize("name", CUTOUTS)
def test_transparent_images_score_the_lower_of_dark_and_light(name: str) -> None:
    original = sample(name)
    assert original.mode == "RGBA"
    for fmt, quality in (("webp", 40), ("avif", 60)):
        candidate = decoded(original, fmt, quality)
        theirs = min(oracle(original, candidate, shade) for shade in (26, 230))
        assert abs(_score.score(original, candidate) - theirs) <= TOLERANCE, (fmt, quality)


@pytest.mark.usefixtures("scorer")
def test_identical_is_100_and_sizes_must_match() -> None:
    original = Image.effect_mandelbrot((96, 80), (-2.0, -1.2, 0.8, 1.2), 60).convert("RGB")
    reference = _score.reference(original)
    assert reference.score(original.copy()) == pytest.approx(100.0, abs=0.01)  # float32
    with pytest.raises(ValueError, match="size"):
        reference.score(original.resize((80, 80)))
