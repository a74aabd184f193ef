"""Each output policy field, through the library's compress_image: the outputs are decoded
and checked (format, dimensions, bytes under the cap, score reached, metadata, background)."""

from __future__ import annotations

import io

import pytest
from PIL import ExifTags, Image, IptcImagePlugin

from imgcompress_core import _score
from imgcompress_core.compress import CompressedImage, CompressOptions, compress_image
from imgcompress_core.errors import CompressionError
from imgcompress_core.policy import OutputPolicy
from policy_kit import PHOTO, cutout, needs_corpus, photo, save, tagged_jpeg


def run(data: bytes, **policy: object) -> CompressedImage:
    return compress_image(data, CompressOptions(policy=OutputPolicy(**policy)))  # type: ignore[arg-type]


def opened(result: CompressedImage) -> Image.Image:
    im = Image.open(io.BytesIO(result.data))
    im.load()
    return im


pytestmark = needs_corpus


@pytest.mark.parametrize(
    ("fmt", "pillow", "content_type"),
    [
        ("jpeg", "JPEG", "image/jpeg"),
        ("webp", "WEBP", "image/webp"),
        ("avif", "AVIF", "image/avif"),
    ],
)
def test_format_is_the_one_asked_for(fmt: str, pillow: str, content_type: str) -> None:
    result = run(save(photo(), "PNG"), format=fmt)
    assert result.content_type == content_type
    assert opened(result).format == pillow
    assert opened(result).size == (1200, 900)
    assert result.quality == 50


def test_original_keeps_the_input_family() -> None:
    png = run(save(cutout(), "PNG"), format="original")
    assert opened(png).format == "PNG"
    assert opened(png).convert("RGBA").getpixel((0, 0))[3] == 0  # transparency kept
    webp = run(save(photo(), "WEBP", quality=90), format="original")
    assert opened(webp).format == "WEBP"
    jpeg = run(save(photo(), "JPEG", quality=95), format="original")
    assert opened(jpeg).format == "JPEG"


def test_auto_picks_the_smallest_allowed_format() -> None:
    data = save(photo(), "PNG")
    sizes = {fmt: len(run(data, format=fmt).data) for fmt in ("jpeg", "webp", "avif")}
    auto = run(data, format="auto")
    assert len(auto.data) == min(sizes.values())
    google = run(data, format="auto", preset="google-merchant")  # no AVIF there
    assert google.content_type != "image/avif"
    assert len(google.data) == min(sizes["jpeg"], sizes["webp"])


def test_quality_is_the_encoder_quality() -> None:
    data = save(photo(), "PNG")
    low, high = run(data, quality=20), run(data, quality=90)
    assert (low.quality, high.quality) == (20, 90)
    assert len(low.data) < len(high.data)


def test_max_bytes_lowers_the_quality_never_the_size() -> None:
    data = PHOTO.read_bytes()
    result = run(data, max_bytes=150_000)
    assert len(result.data) <= 150_000
    assert opened(result).size == (4000, 3000)
    assert result.quality is not None and result.quality < 50
    webp = run(data, format="webp", max_bytes=120_000)
    assert len(webp.data) <= 120_000
    assert opened(webp).size == (4000, 3000)


def test_max_bytes_that_cannot_be_met_fails_naming_the_cap() -> None:
    noise = Image.effect_noise((1500, 1500), 100).convert("RGB")
    with pytest.raises(CompressionError) as caught:
        run(save(noise, "PNG"), max_bytes=2048)
    assert caught.value.code == "max_bytes_unreachable"
    assert "max_bytes (2048 bytes)" in caught.value.message


def test_max_width_and_height_shrink_to_fit_and_never_enlarge() -> None:
    data = PHOTO.read_bytes()
    wide = run(data, max_width=800)
    assert opened(wide).size == (800, 600)
    box = run(data, max_width=1000, max_height=500)
    assert opened(box).size == (667, 500)
    small = run(save(photo((300, 200)), "JPEG", quality=95), max_width=800, max_height=800)
    assert opened(small).size == (300, 200)


def test_resizing_happens_after_exif_orientation() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored landscape, shown portrait
    data = save(photo((800, 400)), "JPEG", quality=95, exif=exif.tobytes())
    result = run(data, max_width=100)
    assert opened(result).size == (100, 200)
    assert (result.width, result.height) == (100, 200)


def test_background_colour_flattens_transparency() -> None:
    data = save(cutout(), "PNG")
    red = run(data, background="#ff0000")
    assert opened(red).format == "JPEG"  # no transparency left: the default writes JPEG
    r, g, b = opened(red).convert("RGB").getpixel((2, 2))
    assert r > 240 and g < 20 and b < 20
    jpeg = run(data, format="jpeg")  # JPEG without a colour: white
    assert min(opened(jpeg).convert("RGB").getpixel((2, 2))) > 245
    kept = run(data, format="webp", background="keep")
    assert opened(kept).mode == "RGBA"
    assert opened(kept).getpixel((2, 2))[3] == 0


def test_metadata_strip_removes_everything_but_colour() -> None:
    result = opened(run(tagged_jpeg(), quality=40))
    assert not result.getexif()
    assert "xmp" not in result.info
    assert IptcImagePlugin.getiptcinfo(result) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "avif"])
def test_metadata_copyright_keeps_rights_and_drops_gps(fmt: str) -> None:
    result = opened(run(tagged_jpeg(), quality=40, metadata="copyright", format=fmt))
    exif = result.getexif()
    assert exif[ExifTags.Base.Artist] == "Ada Photographer"
    assert exif[ExifTags.Base.Copyright] == "(c) 2026 Example Shop"
    assert ExifTags.Base.Make not in exif
    assert ExifTags.IFD.GPSInfo not in exif
    xmp = result.info["xmp"]
    xmp = xmp.decode() if isinstance(xmp, bytes) else xmp
    assert "Example Shop" in xmp and "digitalCapture" in xmp
    assert "GPS" not in xmp
    if fmt == "jpeg":
        iptc = IptcImagePlugin.getiptcinfo(result)  # type: ignore[arg-type]
        assert iptc is not None
        assert iptc[(2, 116)] == b"(c) Example Shop" and iptc[(2, 80)] == b"Ada"
        assert (2, 25) not in iptc  # keywords are not rights


def test_a_kept_original_keeps_its_copyright_too() -> None:
    small = tagged_jpeg(quality=30)
    result = run(small, quality=95, metadata="copyright")  # would be larger: kept
    assert result.kept_original
    kept = opened(result)
    assert kept.getexif()[ExifTags.Base.Copyright] == "(c) 2026 Example Shop"
    assert ExifTags.IFD.GPSInfo not in kept.getexif()
    assert "Example Shop" in str(kept.info["xmp"])
    iptc = IptcImagePlugin.getiptcinfo(kept)  # type: ignore[arg-type]
    assert iptc is not None and iptc[(2, 116)] == b"(c) Example Shop"


@pytest.mark.usefixtures("scorer")
@pytest.mark.parametrize("fmt", ["jpeg", "webp"])
def test_target_quality_reaches_the_score(fmt: str) -> None:
    original = photo((1024, 768))
    result = run(save(original, "PNG"), format=fmt, target_quality=75)
    assert result.score is not None and result.score >= 75
    whole = _score.score(original, opened(result).convert("RGB"))  # the whole image
    assert whole >= 73, f"the estimate said {result.score}, the whole image scores {whole}"
    fixed = run(save(original, "PNG"), format=fmt, quality=95)
    assert len(result.data) < len(fixed.data)


@pytest.mark.usefixtures("scorer")
def test_max_bytes_wins_over_target_quality() -> None:
    data = save(photo((1024, 768)), "PNG")
    result = run(data, target_quality=90, max_bytes=60_000)
    assert len(result.data) <= 60_000
    assert result.score is not None and result.score < 90
    assert any("max_bytes" in w for w in result.warnings)


def test_target_quality_without_the_scorer_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_score, "available", lambda: False)
    with pytest.raises(CompressionError) as caught:
        run(save(photo((64, 48)), "PNG"), target_quality=70)
    assert caught.value.code == "target_quality_unavailable"
    assert "imgcompress[target]" in caught.value.message


def test_amazon_main_warns_about_a_small_image_on_grey() -> None:
    grey = Image.new("RGB", (600, 400), (128, 128, 128))
    result = run(save(grey, "PNG"), preset="amazon-main")
    assert opened(result).format == "JPEG"
    assert len(result.warnings) == 2
    white = Image.new("RGB", (1200, 1000), (255, 255, 255))
    white.paste(photo((400, 300)), (400, 350))
    assert run(save(white, "PNG"), preset="amazon-main").warnings == ()


def test_amazon_main_puts_a_cutout_on_white() -> None:
    result = run(save(cutout((1200, 1000)), "PNG"), preset="amazon-main")
    assert opened(result).format == "JPEG"
    assert min(opened(result).convert("RGB").getpixel((3, 3))) > 245
    assert result.warnings == ()


def test_web_preset_fits_2560_as_webp() -> None:
    result = run(PHOTO.read_bytes(), preset="web")
    assert opened(result).format == "WEBP"
    assert opened(result).size == (2560, 1920)
