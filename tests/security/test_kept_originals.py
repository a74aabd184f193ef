"""A kept original (re-encoding was not smaller, or it is animated) is still cleaned.

Issue 12, finding 5: such originals were served byte for byte, with their GPS
position, comments and EXIF, not upright, while the status reported the upright size.
Each test decodes what would be served and checks what is left in it.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, ImageSequence, PngImagePlugin

from imgcompress_core._clean import strip_metadata
from imgcompress_core.compress import CompressedImage, CompressOptions, compress_image

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">secret xmp</x:xmpmeta>'
SECRETS = (b"SecretCam", b"secret comment", b"secret xmp", b"secret text", b"Exif\x00\x00")
ORIENTATION, GPS_IFD = 0x0112, 0x8825
# A quality-50 JPEG of noise re-encoded at quality 90 is larger: the original is kept.
HIGH = CompressOptions(quality=90)


def exif(orientation: int | None = None) -> Image.Exif:
    """EXIF with a camera name and a GPS position (and an orientation when given)."""
    data = Image.Exif()
    data[0x010F] = "SecretCam"
    data[GPS_IFD] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)}
    if orientation is not None:
        data[ORIENTATION] = orientation
    return data


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def noise(size: tuple[int, int] = (256, 192), seed: int = 1) -> Image.Image:
    """Noise: re-encoding it at a higher quality makes it larger."""
    rnd = random.Random(seed)
    return Image.frombytes("RGB", size, rnd.randbytes(size[0] * size[1] * 3))


def flat(size: tuple[int, int] = (64, 48)) -> Image.Image:
    """One colour with a red top-left block: tiny as PNG, GIF or lossless WebP."""
    image = Image.new("RGB", size, (10, 200, 30))
    image.paste((255, 0, 0), (0, 0, 12, 12))
    return image


def served(result: CompressedImage) -> Image.Image:
    image = Image.open(io.BytesIO(result.data))
    image.load()
    return image


def assert_clean(result: CompressedImage) -> Image.Image:
    """No EXIF, GPS, comment or XMP in the served bytes; the ICC profile is kept; the
    reported size is the served pixels' size."""
    for secret in SECRETS:
        assert secret not in result.data, secret
    image = served(result)
    assert not image.getexif()
    for key in ("exif", "comment", "xmp", "XML:com.adobe.xmp", "Comment"):
        assert key not in image.info, key
    assert image.info.get("icc_profile") == SRGB
    assert (result.width, result.height) == image.size
    return image


def same_pixels(a: bytes, b: bytes) -> bool:
    with Image.open(io.BytesIO(a)) as first, Image.open(io.BytesIO(b)) as second:
        return first.mode == second.mode and first.tobytes() == second.tobytes()


# Kept because re-encoding was not smaller: cleaned without re-encoding


def test_a_kept_jpeg_loses_exif_gps_comment_and_xmp_but_keeps_icc_and_pixels() -> None:
    data = encode(
        noise(),
        "JPEG",
        quality=50,
        exif=exif(),
        comment=b"secret comment",
        xmp=XMP,
        icc_profile=SRGB,
    )
    result = compress_image(data, HIGH)
    assert result.kept_original  # the case under test: q50 would be larger
    assert_clean(result)
    assert same_pixels(result.data, data)  # not re-encoded
    assert len(result.data) < len(data) and result.input_bytes == len(data)
    assert result.note is not None and "without its metadata" in result.note


def test_a_kept_jpeg_that_needs_rotating_is_re_encoded_upright() -> None:
    """Only re-encoding can make it upright: the re-encoded image is stored, and the
    reported size is the size of what is served."""
    image = noise()
    image.paste((255, 0, 0), (0, 0, 24, 24))  # red at the stored top-left
    data = encode(image, "JPEG", quality=50, exif=exif(orientation=6), icc_profile=SRGB)
    result = compress_image(data, HIGH)
    out = assert_clean(result).convert("RGB")
    assert not result.kept_original
    assert out.size == (192, 256) == (result.width, result.height)
    red, green, blue = out.getpixel((192 - 12, 12))  # type: ignore[misc]
    assert red > 150 and max(green, blue) < 110  # rotated 90 degrees clockwise
    assert len(result.data) >= len(data)  # larger, but the only way to be upright
    assert result.note is not None and "upright" in result.note


def test_a_kept_mpo_loses_its_other_pictures() -> None:
    data = encode(noise(), "MPO", quality=50, save_all=True, append_images=[flat((16, 12))])
    result = compress_image(data, HIGH)
    assert result.kept_original
    assert b"MPF\x00" not in result.data
    assert result.data.count(b"\xff\xd8") == 1  # one picture: no second SOI
    assert served(result).format == "JPEG"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF"])
def test_data_after_the_end_of_a_kept_image_is_dropped(fmt: str) -> None:
    """A polyglot (an image with a zip or HTML after its end marker) loses the tail."""
    image = noise() if fmt == "JPEG" else flat()
    params: dict[str, object] = {"quality": 50} if fmt == "JPEG" else {}
    tail = b"PK\x03\x04<html><script>alert(1)</script></html>"
    result = compress_image(encode(image, fmt, **params) + tail, HIGH)
    assert result.kept_original
    assert b"alert" not in result.data


def test_a_kept_png_loses_its_text_exif_and_time_chunks() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "secret text")
    info.add_text("Author", "secret text", zip=True)
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    info.add(b"tIME", b"\x07\xe8\x01\x01\x00\x00\x00")
    data = encode(flat(), "PNG", pnginfo=info, exif=exif(), icc_profile=SRGB)
    result = compress_image(data)
    assert result.kept_original
    assert_clean(result)
    for chunk in (b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME"):
        assert chunk not in result.data
    assert same_pixels(result.data, data)


def test_a_kept_png_that_needs_rotating_is_re_encoded_upright() -> None:
    data = encode(flat(), "PNG", exif=exif(orientation=6), icc_profile=SRGB)
    result = compress_image(data)
    out = assert_clean(result).convert("RGB")
    assert out.size == (48, 64) == (result.width, result.height)
    assert out.getpixel((48 - 4, 4))[0] > 200  # type: ignore[index]


def test_a_kept_webp_loses_exif_and_xmp_and_its_flags() -> None:
    data = encode(flat(), "WEBP", lossless=True, exif=exif(), xmp=XMP, icc_profile=SRGB)
    result = compress_image(data)
    assert result.kept_original
    assert_clean(result)
    assert b"EXIF" not in result.data and b"XMP " not in result.data
    assert result.data[20] & 0x0C == 0  # VP8X no longer announces EXIF or XMP
    assert int.from_bytes(result.data[4:8], "little") == len(result.data) - 8
    assert same_pixels(result.data, data)


def test_a_kept_gif_loses_its_comment_and_xmp() -> None:
    gif = encode(Image.new("P", (64, 48), 1), "GIF", comment=b"secret comment")
    xmp_block = b"!\xff\x0bXMP DataXMP" + bytes([len(XMP)]) + XMP + b"\x00"
    data = gif[:-1] + xmp_block + b";"
    result = compress_image(data)
    assert result.kept_original
    for secret in SECRETS:
        assert secret not in result.data
    assert b"XMP DataXMP" not in result.data
    assert same_pixels(result.data, data)


# Animations: kept frame for frame, without their metadata


def animation(fmt: str) -> bytes:
    frames = [flat(), flat().rotate(180)]
    params: dict[str, object] = {"save_all": True, "append_images": frames[1:]}
    if fmt == "GIF":
        params["comment"] = b"secret comment"
    else:
        params.update(exif=exif(), icc_profile=SRGB)
        if fmt == "WEBP":
            params.update(xmp=XMP, lossless=True)
    return encode(frames[0], fmt, **params)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_a_kept_animation_loses_its_metadata_and_keeps_its_frames(fmt: str) -> None:
    data = animation(fmt)
    result = compress_image(data)
    assert result.kept_original
    assert result.note is not None and "animated" in result.note
    for secret in SECRETS:
        assert secret not in result.data
    with Image.open(io.BytesIO(data)) as before, Image.open(io.BytesIO(result.data)) as after:
        assert after.n_frames == before.n_frames == 2  # type: ignore[attr-defined]
        pairs = zip(ImageSequence.Iterator(before), ImageSequence.Iterator(after), strict=True)
        for old, new in pairs:
            assert old.convert("RGBA").tobytes() == new.convert("RGBA").tobytes()
        assert not after.getexif()
        if fmt != "GIF":
            assert after.info.get("icc_profile") == SRGB


# Lossless: cleaning never changes a pixel, and leaves a clean file as it was


def corpus_jpegs(count: int) -> list[bytes]:
    found = sorted(CORPUS.glob("j*.jpg")) if CORPUS.is_dir() else []
    return [path.read_bytes() for path in found[:: max(1, len(found) // count)]]


@pytest.mark.usefixtures("shared_corpus")
def test_cleaning_corpus_jpegs_keeps_every_pixel_and_the_icc_profile() -> None:
    photos = corpus_jpegs(6)
    for data in photos:
        cleaned = strip_metadata(data, "JPEG")
        assert same_pixels(cleaned, data)
        with Image.open(io.BytesIO(cleaned)) as after, Image.open(io.BytesIO(data)) as before:
            assert after.info.get("icc_profile") == before.info.get("icc_profile")
            assert not after.getexif()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_a_file_without_metadata_is_left_byte_for_byte(fmt: str) -> None:
    params: dict[str, object] = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(flat(), fmt, **params)
    assert strip_metadata(data, fmt) == data


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["JPEG", "PNG", "WEBP", "GIF"]), st.binary(max_size=64), st.data())
def test_cleaning_mutated_files_gives_a_file_or_a_value_error(
    fmt: str, junk: bytes, data: st.DataObject
) -> None:
    params: dict[str, object] = {"lossless": True} if fmt == "WEBP" else {}
    original = bytearray(encode(flat((16, 12)), fmt, **params))
    at = data.draw(st.integers(0, len(original)))
    original[at:at] = junk
    try:
        cleaned = strip_metadata(bytes(original), fmt)
    except ValueError:
        return
    assert len(cleaned) <= len(original) + 1  # a WebP chunk may gain its padding byte
