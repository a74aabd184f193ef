"""Tests for imgcompress_core.compress: the documented compression policy."""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, JpegImagePlugin

from imgcompress_core._header import pixel_bytes, read_header
from imgcompress_core.compress import (
    ACCEPTED_FORMATS,
    CompressedImage,
    CompressOptions,
    compress_image,
    decoded_size,
    extension_for,
)
from imgcompress_core.errors import CompressionError

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
CODES = {"not_an_image", "unsupported_format", "image_too_large", "corrupt_image"}
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
SIZE = (64, 48)


def photo(mode: str = "RGB", size: tuple[int, int] = SIZE, seed: int = 1) -> Image.Image:
    """A gradient with noise, so lossy encoders have something to compress."""
    rnd = random.Random(seed)
    w, h = size
    im = Image.new("RGB", size)
    im.putdata(
        [
            ((x * 255) // w, (y * 255) // h, (x * y + rnd.randrange(64)) % 256)
            for y in range(h)
            for x in range(w)
        ]
    )
    return im if mode == "RGB" else im.convert(mode)


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def reopen(result: CompressedImage) -> Image.Image:
    im = Image.open(io.BytesIO(result.data))
    im.load()
    return im


def qtables(im: Image.Image) -> dict[int, list[int]]:
    assert isinstance(im, JpegImagePlugin.JpegImageFile)
    return im.quantization


def error_of(data: bytes, options: CompressOptions | None = None) -> CompressionError:
    with pytest.raises(CompressionError) as info:
        compress_image(data, options or CompressOptions())
    return info.value


def with_transparent_corner(mode: str = "RGBA") -> Image.Image:
    im = photo("RGBA")
    im.paste((0, 0, 0, 0), (0, 0, 16, 16))
    return im if mode == "RGBA" else im.convert(mode)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming a size, with almost no pixel data: decoding it would fail."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )


# Options


@pytest.mark.parametrize("quality", [0, 96, -5, True])
def test_quality_out_of_range_is_rejected(quality: int) -> None:
    with pytest.raises(ValueError, match="quality"):
        CompressOptions(quality=quality)


def test_defaults_and_bounds() -> None:
    assert CompressOptions() == CompressOptions(quality=50, max_pixels=50_000_000)
    assert CompressOptions(quality=1).quality == 1
    assert CompressOptions(quality=95).quality == 95
    with pytest.raises(ValueError, match="max_pixels"):
        CompressOptions(max_pixels=0)
    assert CompressOptions().max_decode_bytes == 512 * 1024 * 1024
    for bad in (0, -1, True):
        with pytest.raises(ValueError, match="max_decode_bytes"):
            CompressOptions(max_decode_bytes=bad)
    assert ACCEPTED_FORMATS == ("JPEG", "PNG", "WEBP", "GIF")


@pytest.mark.parametrize(
    ("content_type", "extension"),
    [
        ("image/jpeg", ".jpg"),
        ("image/webp", ".webp"),
        ("image/png", ".png"),
        ("image/gif", ".gif"),
        ("image/bmp", ".bin"),
        ("", ".bin"),
    ],
)
def test_extension_for(content_type: str, extension: str) -> None:
    assert extension_for(content_type) == extension


# JPEG encoding settings


@pytest.mark.parametrize("quality", [50, 80])
def test_jpeg_is_baseline_optimised_at_the_quality(quality: int) -> None:
    src = photo()
    result = compress_image(encode(src, "JPEG", quality=95), CompressOptions(quality=quality))
    out = reopen(result)
    reference = Image.open(io.BytesIO(encode(out, "JPEG", quality=quality)))
    assert qtables(out) == qtables(reference)
    assert "progressive" not in out.info
    assert not out.info.get("progression")
    assert JpegImagePlugin.get_sampling(out) == 2  # 4:2:0
    unoptimised = encode(src, "JPEG", quality=quality, optimize=False)
    assert len(result.data) < len(unoptimised)  # Huffman tables optimised
    assert result.content_type == "image/jpeg"
    assert (result.width, result.height, result.input_format) == (64, 48, "JPEG")
    assert not result.kept_original
    assert result.note is None


def test_exif_orientation_is_applied() -> None:
    src = photo()
    src.paste((255, 0, 0), (0, 0, 12, 12))  # red block at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    result = compress_image(encode(src, "JPEG", quality=95, exif=exif.tobytes()))
    out = reopen(result).convert("RGB")
    assert out.size == (48, 64)
    assert (result.width, result.height) == (48, 64)
    red, green, blue = out.getpixel((48 - 6, 6))  # type: ignore[misc]
    assert red > 200
    assert max(green, blue) < 60
    assert 0x0112 not in out.getexif()


def test_metadata_is_stripped_but_icc_is_kept() -> None:
    exif = Image.Exif()
    exif[0x010F] = "SecretCamMaker"
    data = encode(
        photo(),
        "JPEG",
        quality=95,
        exif=exif.tobytes(),
        icc_profile=SRGB,
        comment=b"secret comment",
        xmp=b"<x:xmpmeta>secret xmp</x:xmpmeta>",
    )
    result = compress_image(data)
    out = reopen(result)
    assert out.info.get("icc_profile") == SRGB
    for key in ("exif", "comment", "xmp"):
        assert key not in out.info
    assert not out.getexif()
    for secret in (b"SecretCamMaker", b"secret comment", b"secret xmp", b"Exif\x00\x00"):
        assert secret not in result.data


def test_grayscale_jpeg_stays_grayscale() -> None:
    result = compress_image(encode(photo("L"), "JPEG", quality=95))
    assert reopen(result).mode == "L"


def test_multi_picture_jpeg_is_compressed_as_jpeg() -> None:
    data = encode(photo(), "MPO", quality=95, save_all=True, append_images=[photo(seed=5)])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    result = compress_image(data)
    assert (result.input_format, result.content_type) == ("JPEG", "image/jpeg")
    assert not result.kept_original
    assert reopen(result).format == "JPEG"


def test_cmyk_jpeg_stays_cmyk_with_its_colours() -> None:
    src = photo("CMYK")
    result = compress_image(encode(src, "JPEG", quality=95))
    out = reopen(result)
    assert out.mode == "CMYK"
    assert result.content_type == "image/jpeg"
    before = src.getpixel((40, 30))
    after = out.getpixel((40, 30))
    assert isinstance(before, tuple)
    assert isinstance(after, tuple)
    assert all(abs(a - b) <= 48 for a, b in zip(before, after, strict=True))


# Format conversions


@pytest.mark.parametrize(
    ("image", "fmt"),
    [
        (photo(), "PNG"),
        (photo("RGBA"), "PNG"),  # alpha channel present but fully opaque
        (photo("P"), "PNG"),
        (photo(), "WEBP"),
        (photo("P"), "GIF"),
    ],
)
def test_opaque_inputs_become_jpeg(image: Image.Image, fmt: str) -> None:
    params: dict[str, object] = {"lossless": True} if fmt == "WEBP" else {}
    result = compress_image(encode(image, fmt, **params))
    assert result.content_type == "image/jpeg"
    assert reopen(result).mode == "RGB"
    assert result.input_format == fmt
    assert (result.width, result.height) == SIZE
    assert result.note is not None
    assert "to JPEG" in result.note


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_transparent_inputs_become_webp_and_stay_transparent(mode: str, fmt: str) -> None:
    image = with_transparent_corner()
    if mode == "P":  # a palette with one transparent entry
        image = photo("P")
        image.paste(0, (0, 0, 16, 16))
        image.info["transparency"] = 0
    elif mode == "LA":
        image = image.convert("LA")
    data = encode(image, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    result = compress_image(data)
    out = reopen(result)
    assert result.content_type == "image/webp"
    assert out.mode == "RGBA"
    assert out.getpixel((2, 2))[3] == 0  # type: ignore[index]
    assert out.getpixel((50, 40))[3] == 255  # type: ignore[index]
    assert sum(out.getpixel((50, 40))[:3]) > 0  # type: ignore[index]
    assert not result.kept_original


def test_gif_with_transparency_becomes_webp() -> None:
    image = photo("P")
    image.paste(0, (0, 0, 16, 16))
    result = compress_image(encode(image, "GIF", transparency=0))
    assert result.content_type == "image/webp"
    assert reopen(result).getpixel((2, 2))[3] == 0  # type: ignore[index]


def test_webp_output_keeps_icc() -> None:
    result = compress_image(encode(with_transparent_corner(), "PNG", icc_profile=SRGB))
    assert result.content_type == "image/webp"
    assert reopen(result).info.get("icc_profile") == SRGB


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    rnd = random.Random(7)
    w, h = SIZE
    src = Image.new("I;16", SIZE)
    src.putdata([32768 + rnd.randrange(-300, 300) for _ in range(w * h)])
    data = encode(src, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    result = compress_image(data)
    out = reopen(result)
    assert out.mode == "L"
    assert result.content_type == "image/jpeg"
    used = [value for value, count in enumerate(out.histogram()) if count]
    assert min(used) >= 118  # clipping would give 255
    assert max(used) <= 138


# Kept originals


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated_images_are_kept(fmt: str) -> None:
    frames = [photo(), photo(seed=2)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:])
    result = compress_image(data)
    assert result.kept_original
    assert result.data == data
    assert result.content_type == f"image/{fmt.lower()}"
    assert result.input_format == fmt
    assert (result.width, result.height) == SIZE
    assert result.note is not None
    assert "animated" in result.note


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), "image/png"),
        (
            encode(Image.new("RGB", (8, 8), (9, 9, 9)), "JPEG", quality=10, optimize=True),
            "image/jpeg",
        ),
        (encode(Image.new("1", SIZE), "PNG"), "image/png"),
    ],
)
def test_output_is_never_larger_than_input(data: bytes, content_type: str) -> None:
    result = compress_image(data)
    assert result.kept_original
    assert result.data == data
    assert result.content_type == content_type
    assert result.note is not None
    assert "was not smaller than the original" in result.note
    assert f"({len(data)} bytes)" in result.note


# Bad input


def test_pixel_cap_is_checked_and_named() -> None:
    error = error_of(encode(photo(), "PNG"), CompressOptions(max_pixels=1000))
    assert error.code == "image_too_large"
    assert "3072" in error.message
    assert "1000" in error.message
    assert "max_image_pixels" in error.message


def test_pixel_cap_is_checked_from_the_header_before_decoding() -> None:
    error = error_of(png_header_only(8000, 7000))  # 56 MP > 50 MP default, no pixel data
    assert error.code == "image_too_large"
    assert "50000000" in error.message


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [10_000, 20_000])
def test_pillow_bomb_guard_maps_to_image_too_large(side: int) -> None:
    error = error_of(png_header_only(side, side), CompressOptions(max_pixels=10**9))
    assert error.code == "image_too_large"


def test_empty_and_random_bytes_are_not_images() -> None:
    assert error_of(b"").code == "not_an_image"
    assert error_of(b"<!doctype html><html>Not found</html>").code == "not_an_image"
    assert error_of(random.Random(3).randbytes(4000)).code == "not_an_image"


@pytest.mark.parametrize("cut", [10, 200, 0.5])
def test_truncated_jpeg_is_corrupt(cut: float) -> None:
    data = encode(photo(), "JPEG", quality=95)
    error = error_of(data[: int(cut * len(data)) if cut < 1 else int(cut)])
    assert error.code == "corrupt_image"


@pytest.mark.parametrize(("fmt", "name"), [("BMP", "BMP"), ("TIFF", "TIFF")])
def test_other_formats_are_unsupported(fmt: str, name: str) -> None:
    error = error_of(encode(photo(), fmt))
    assert error.code == "unsupported_format"
    assert name in error.message


# Decoded size, read from the header before decoding


def gif_with_frame_beyond_its_screen() -> bytes:
    """A GIF whose 10x10 screen holds a 40x30 frame at (5, 5): Pillow grows it to 45x35."""
    head = b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 5, 5, 40, 30, 0) + b"\x02\x02\x44\x01\x00"
    return head + b"!\xfe\x03abc\x00" + frame + b";"


HEADER_CASES = [
    (encode(photo(), "JPEG"), (64, 48), 4),
    (encode(photo("L"), "JPEG"), (64, 48), 1),
    (encode(photo("CMYK"), "JPEG"), (64, 48), 4),
    (encode(photo(), "JPEG", progressive=True), (64, 48), 4),
    (encode(photo(), "PNG"), (64, 48), 4),
    (encode(photo("L"), "PNG"), (64, 48), 1),
    (encode(photo("L"), "PNG", transparency=0), (64, 48), 4),  # expanded to RGBA
    (encode(photo("P"), "PNG"), (64, 48), 4),  # palette: expanded to RGB
    (encode(photo("1"), "PNG"), (64, 48), 1),
    (encode(Image.new("I;16", SIZE, 40000), "PNG"), (64, 48), 2),
    (encode(with_transparent_corner(), "PNG"), (64, 48), 4),
    (encode(photo("P"), "GIF"), (64, 48), 4),
    (gif_with_frame_beyond_its_screen(), (45, 35), 4),
    (encode(photo(), "WEBP"), (64, 48), 4),
    (encode(photo(), "WEBP", lossless=True), (64, 48), 4),
    (encode(with_transparent_corner(), "WEBP"), (64, 48), 4),
    (encode(photo(), "WEBP", icc_profile=SRGB), (64, 48), 4),  # VP8X
]


@pytest.mark.parametrize(("data", "size", "per_pixel"), HEADER_CASES)
def test_decoded_size_is_read_from_the_header_as_pillow_sees_it(
    data: bytes, size: tuple[int, int], per_pixel: int
) -> None:
    header = read_header(data)
    assert header is not None
    assert (header.width, header.height, header.pixel_bytes) == (*size, per_pixel)
    assert decoded_size(data) == size[0] * size[1] * per_pixel
    with Image.open(io.BytesIO(data)) as im:  # the same as Pillow's own view
        assert im.size == size
        assert pixel_bytes(im.mode, im.has_transparency_data) == per_pixel


def test_decoded_size_of_non_images_and_unreadable_headers() -> None:
    options = CompressOptions(max_decode_bytes=1000)
    assert decoded_size(b"<html></html>", options) == 0  # no decoder will run on it
    assert decoded_size(b"\xff\xd8\xff\xe0\x00\x10JFIF", options) == 1000  # counts as the most


def test_an_image_over_the_decode_budget_is_refused_before_decoding() -> None:
    error = error_of(png_header_only(4000, 4000), CompressOptions(max_decode_bytes=10**6))
    assert error.code == "image_too_large"
    assert "max_decode_bytes" in error.message


# Properties

SMALL = CompressOptions(max_pixels=1_000_000)  # keeps mutated headers from allocating much
SEEDS = [
    encode(photo(size=(24, 16)), "JPEG", quality=90),
    encode(photo("CMYK", size=(24, 16)), "JPEG", quality=90),
    encode(with_transparent_corner().resize((24, 16)), "PNG"),
    encode(photo("P", size=(24, 16)), "GIF"),
    encode(with_transparent_corner().resize((24, 16)), "WEBP"),
]


def check_outcome(data: bytes) -> None:
    outcome: CompressedImage | CompressionError
    try:
        outcome = compress_image(data, SMALL)
    except CompressionError as error:
        outcome = error
    if isinstance(outcome, CompressionError):
        assert outcome.code in CODES
    else:
        assert isinstance(outcome, CompressedImage)
        assert len(outcome.data) <= len(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(1, len(data)))])


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_give_a_result_or_a_compression_error(data: bytes) -> None:
    check_outcome(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_images_give_a_result_or_a_compression_error(data: bytes) -> None:
    check_outcome(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_the_header_never_claims_less_than_pillow_decodes(data: bytes) -> None:
    """Whatever the bytes, reading the header never raises, and when Pillow opens the
    file, the header's decoded size is at least what Pillow would decode."""
    header = read_header(data)
    try:
        with Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS)) as im:
            pillow = im.width * im.height * pixel_bytes(im.mode, im.has_transparency_data)
    except Exception:
        return
    assert header is not None
    assert header.decoded_bytes >= pillow


# Realism: a real photograph from the shared corpus when present, else a generated one


@pytest.mark.parametrize("kind", ["jpeg", "png_alpha"])
def test_realistic_image(kind: str) -> None:
    pattern = "j*.jpg" if kind == "jpeg" else "p*_a.png"
    found = sorted(CORPUS.glob(pattern), key=lambda p: p.stat().st_size) if CORPUS.is_dir() else []
    if found:
        data = found[0].read_bytes()
    elif kind == "jpeg":
        data = encode(photo(size=(640, 480)), "JPEG", quality=90)
    else:
        data = encode(with_transparent_corner().resize((640, 480)), "PNG")
    with Image.open(io.BytesIO(data)) as src:
        size = src.size
    result = compress_image(data)
    assert not result.kept_original
    assert len(result.data) < len(data)
    assert (result.width, result.height) == size
    out = reopen(result)
    assert out.size == size
    if kind == "jpeg":
        assert result.content_type == "image/jpeg"
        reference = Image.open(io.BytesIO(encode(out, "JPEG", quality=50)))
        assert qtables(out) == qtables(reference)
    else:
        assert result.content_type == "image/webp"
        assert out.mode == "RGBA"
