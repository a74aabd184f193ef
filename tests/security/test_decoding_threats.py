"""Hostile image files against ``compress_image``: bombs, truncation, disguises.

The fuzzing counterpart (any bytes give a result or a CompressionError) is in
``tests/unit/test_compress.py``.
"""

from __future__ import annotations

import io
import struct
import subprocess
import time
from pathlib import Path

import pytest
from PIL import EpsImagePlugin, Image, ImageFile
from security_kit import (
    RawServer,
    Router,
    elapsed,
    gif_frame_bomb,
    jpeg_scan_bomb,
    png_header,
    response,
)

from imgcompress_core import compress
from imgcompress_core._jpeg import count_scans
from imgcompress_core.compress import CompressOptions, compress_image, decoded_size
from imgcompress_core.errors import CompressionError
from imgcompress_core.fetch import FetchOptions, HttpxFetcher

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
MIB = 1 << 20


def encode(
    fmt: str, size: tuple[int, int] = (64, 48), mode: str = "RGB", **params: object
) -> bytes:
    image = Image.linear_gradient("L").resize(size).convert(mode)
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def refused(data: bytes, code: str, options: CompressOptions = CompressOptions()) -> str:
    with pytest.raises(CompressionError) as caught:
        compress_image(data, options)
    assert caught.value.code == code, caught.value.message
    return caught.value.message


# Decompression bombs: the pixel cap is checked from the header, before decoding


@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (65_535, 65_535), (8000, 8000)])
def test_a_png_claiming_huge_dimensions_is_refused_from_its_header(width: int, height: int) -> None:
    start = time.perf_counter()
    refused(png_header(width, height), "image_too_large")
    assert elapsed(start) < 0.5


def test_the_pixel_cap_names_itself_and_the_size() -> None:
    message = refused(png_header(2000, 2000), "image_too_large", CompressOptions(max_pixels=10**6))
    assert "2000x2000" in message and "max_image_pixels" in message


def test_a_jpeg_claiming_huge_dimensions_is_refused_from_its_header() -> None:
    data = bytearray(encode("JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65_000, 65_000)
    start = time.perf_counter()
    refused(bytes(data), "image_too_large")
    assert elapsed(start) < 0.5


def test_a_gif_with_a_huge_canvas_is_refused() -> None:
    refused(gif_frame_bomb(65_535, 65_535, 1), "image_too_large")


@pytest.mark.parametrize("side", [8000, 16000])
def test_a_webp_claiming_a_huge_canvas_is_refused(side: int) -> None:
    frames = [Image.new("RGB", (2, 2), (i * 80, 0, 0)) for i in range(2)]
    out = io.BytesIO()
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    data = bytearray(out.getvalue())
    assert data[12:16] == b"VP8X"
    data[24:27] = (side - 1).to_bytes(3, "little")
    data[27:30] = (side - 1).to_bytes(3, "little")
    refused(bytes(data), "image_too_large")


# Frame bombs: animations are stored as they are, never decoded frame by frame


def test_a_gif_frame_bomb_is_not_decoded_frame_by_frame() -> None:
    """5,000 frames on a 7000x7000 canvas (49 MP each if composited): judged in well
    under a second, because frames are counted from their headers, never composited."""
    bomb = gif_frame_bomb(7000, 7000, 5000)
    start = time.perf_counter()
    with pytest.raises(CompressionError):
        compress_image(bomb)
    assert elapsed(start) < 1.0


def test_an_animation_within_the_caps_is_kept() -> None:
    result = compress_image(gif_frame_bomb(200, 200, 20))
    assert result.kept_original
    assert result.input_format == "GIF"


def test_a_gif_frame_bomb_is_refused() -> None:
    with pytest.raises(CompressionError) as caught:
        compress_image(gif_frame_bomb(7000, 7000, 5000))
    assert caught.value.code == "too_many_frames"
    assert "max_animation_frames" in caught.value.message


def test_an_animation_over_the_pixel_budget_is_refused() -> None:
    options = CompressOptions(max_animation_pixels=7000 * 7000 * 10)
    with pytest.raises(CompressionError) as caught:
        compress_image(gif_frame_bomb(7000, 7000, 50), options)
    assert caught.value.code == "image_too_large"


def test_a_progressive_jpeg_scan_bomb_is_refused_quickly() -> None:
    bomb = jpeg_scan_bomb(1000, 1000)  # 24 KB
    start = time.perf_counter()
    with pytest.raises(CompressionError) as caught:
        compress_image(bomb)
    assert elapsed(start) < 0.2
    assert caught.value.code == "image_too_complex"


def test_an_ordinary_progressive_jpeg_is_still_compressed() -> None:
    data = encode("JPEG", (640, 480), quality=95, progressive=True)
    result = compress_image(data)
    assert result.content_type == "image/jpeg"
    assert not result.kept_original


# Scan bombs with byte tricks: scans are found the way libjpeg finds markers


def after_app0(data: bytes, inserted: bytes) -> bytes:
    """Insert bytes right after the APP0 segment (where the old count gave up)."""
    assert data[2:4] == b"\xff\xe0"
    end = 4 + int.from_bytes(data[4:6], "big")
    return data[:end] + inserted + data[end:]


TRICKS = {
    "stray 0x00 after APP0": b"\x00",
    "garbage after APP0": b"\x00\x01garbage\x7f",
    "stuffed-looking 0xFF00 after APP0": b"\xff\x00",
    "fill bytes before the next marker": b"\xff\xff\xff",
}


@pytest.mark.parametrize("inserted", TRICKS.values(), ids=TRICKS.keys())
def test_a_scan_bomb_with_a_byte_trick_is_refused(inserted: bytes) -> None:
    """Issue 12, finding 2: one stray byte after APP0 stopped the count, and libjpeg,
    which skips such bytes, then decoded every one of the thousands of scans."""
    bomb = after_app0(jpeg_scan_bomb(64, 3000), inserted)
    with Image.open(io.BytesIO(bomb)) as decoded:  # the trick is real: libjpeg decodes it
        decoded.load()
    start = time.perf_counter()
    message = refused(bomb, "image_too_complex")
    assert elapsed(start) < 0.5
    assert "max_jpeg_scans" in message


def test_scans_just_under_the_limit_with_a_stray_byte_are_compressed() -> None:
    data = after_app0(jpeg_scan_bomb(64, 90), b"\x00")
    assert count_scans(data, 100) <= 100
    assert compress_image(data).content_type == "image/jpeg"


def test_scans_after_a_marker_libjpeg_does_not_skip_by_length_are_counted() -> None:
    """libjpeg never skips a reserved marker (0x02..0xBF) by a length field: it fails,
    or (resyncing at a restart) looks for the next marker right after it."""
    sos = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + b"\x12\x34"
    hidden = b"\xff\xd8" + b"\xff\x02\xff\xff" + sos * 150 + b"\xff\xd9"
    assert count_scans(hidden, 100) > 100
    assert count_scans(b"\xff\xd8" + b"\xff\xd2" + sos * 150 + b"\xff\xd9", 10**6) == 150


def test_scan_markers_inside_a_comment_are_not_scans() -> None:
    """libjpeg skips a COM segment by its length: what is inside is not counted, so an
    ordinary progressive JPEG with a strange comment is not refused."""
    data = encode("JPEG", (320, 240), quality=90, progressive=True)
    fake_scans = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" * 500
    comment = b"\xff\xfe" + (len(fake_scans) + 2).to_bytes(2, "big") + fake_scans
    data = data[:2] + comment + data[2:]
    assert count_scans(data, 100) < 20
    assert compress_image(data).content_type == "image/jpeg"


@pytest.mark.usefixtures("shared_corpus")
def test_the_corpus_jpegs_pass_the_scan_count() -> None:
    photos = sorted(CORPUS.glob("j*.jpg"))
    counts = {path.name: count_scans(path.read_bytes(), 100) for path in photos}
    assert max(counts.values()) <= 100
    progressive = [name for name, count in counts.items() if count > 1]
    assert progressive  # the corpus has progressive JPEGs (10 scans each)
    for name in progressive[:3]:
        assert compress_image((CORPUS / name).read_bytes()).content_type == "image/jpeg"


# Decoding memory: a budget, checked from the header before decoding


def test_an_image_over_the_decode_budget_is_refused_naming_the_setting() -> None:
    """6000x6000 RGB is 137 MiB decoded (4 bytes a pixel in Pillow): over a 100 MiB
    budget, refused from its header without decoding."""
    options = CompressOptions(max_decode_bytes=100 * MIB)
    start = time.perf_counter()
    message = refused(png_header(6000, 6000), "image_too_large", options)
    assert elapsed(start) < 0.5
    assert "max_decode_bytes" in message and "6000x6000" in message
    assert decoded_size(png_header(5000, 5000), options) == 5000 * 5000 * 4


def test_too_many_pixels_names_max_image_pixels_not_pillows_limit() -> None:
    """Issue 12, finding 8: a 400-megapixel image got Pillow's "exceeds limit of
    178956970 pixels"; the reason names our cap instead."""
    message = refused(png_header(20_000, 20_000), "image_too_large")
    assert "max_image_pixels" in message
    assert "178956970" not in message


def test_pillows_own_bomb_guard_also_names_max_image_pixels() -> None:
    """With the cap raised above Pillow's own limit, Pillow refuses; the reason still
    names the setting."""
    options = CompressOptions(max_pixels=10**9, max_decode_bytes=1 << 40)
    message = refused(png_header(20_000, 20_000), "image_too_large", options)
    assert "max_image_pixels" in message


def test_running_out_of_memory_names_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_memory(self: object) -> None:
        raise MemoryError

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_memory)
    message = refused(encode("JPEG", mode="CMYK"), "image_too_large")  # Pillow decodes CMYK
    assert "max_decode_bytes" in message


def test_running_out_of_memory_in_imagecodecs_names_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import imagecodecs

    def no_memory(data: bytes, **options: object) -> None:
        raise MemoryError

    def accelerator_out_of_memory(data: bytes, quality: int) -> None:
        raise MemoryError  # what the compiled accelerator raises when libjpeg's malloc fails

    monkeypatch.setattr(compress, "jpeg_requantised", accelerator_out_of_memory)
    assert "max_decode_bytes" in refused(encode("JPEG"), "image_too_large")
    monkeypatch.setattr(compress, "jpeg_requantised", lambda data, quality: None)
    monkeypatch.setattr(imagecodecs, "deflate_decode", no_memory)  # the PNG accelerator's
    assert "max_decode_bytes" in refused(encode("PNG"), "image_too_large")
    monkeypatch.setattr(imagecodecs, "deflate_decode", lambda data, out: None)
    monkeypatch.setattr(imagecodecs, "spng_decode", no_memory)
    monkeypatch.setattr(imagecodecs, "jpeg8_decode", no_memory)
    for fmt in ("PNG", "JPEG"):
        message = refused(encode(fmt), "image_too_large")
        assert "max_decode_bytes" in message


# Truncated files fail with corrupt_image


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_a_truncated_image_is_corrupt(fmt: str, keep: float) -> None:
    data = encode(fmt, (256, 192), quality=90) if fmt != "GIF" else encode(fmt, (256, 192))
    refused(data[: int(len(data) * keep)], "corrupt_image")


@pytest.mark.parametrize(
    "head", [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBP"]
)
def test_a_bare_signature_is_corrupt(head: bytes) -> None:
    message = refused(head, "corrupt_image")
    assert "starts like a" in message


# Disguised files: Content-Type and names are never trusted, only the bytes


DISGUISES = [
    (b"<!DOCTYPE html><html><body>Not found</body></html>", "not_an_image", None),
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "not_an_image", None),
    (b'{"error": "not an image"}', "not_an_image", None),
    (b"", "not_an_image", None),
    (b"%PDF-1.7\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n", "unsupported_format", "PDF"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "unsupported_format", "EPS"),
    (b"\xc5\xd0\xd3\xc6" + b"\x00" * 28, "unsupported_format", "EPS"),
    (b"8BPS\x00\x01" + b"\x00" * 40, "unsupported_format", "PSD"),
    (b"\xff\xd8\xff\xe0<html><script>alert(1)</script></html>", "corrupt_image", None),
]


@pytest.mark.parametrize(
    ("data", "code", "named"), DISGUISES, ids=[d[0][:12].hex() for d in DISGUISES]
)
def test_a_disguised_file_fails_with_the_right_code(
    data: bytes, code: str, named: str | None
) -> None:
    message = refused(data, code)
    if named:
        assert named in message


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "ICO"])
def test_other_real_formats_are_named_and_refused(fmt: str) -> None:
    data = encode(fmt, (32, 32))
    message = refused(data, "unsupported_format")
    assert fmt in message


def test_eps_never_reaches_ghostscript(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []

    def spy(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise AssertionError("an external program was started")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", spy)
    monkeypatch.setattr(subprocess, "Popen", spy)
    monkeypatch.setattr(subprocess, "check_call", spy)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n0 0 moveto showpage\n%%EOF\n"
    refused(eps, "unsupported_format")
    assert calls == []


@pytest.mark.anyio
async def test_content_type_is_never_trusted() -> None:
    """HTML served as image/jpeg is refused; a JPEG served as text/html is compressed."""
    jpeg = encode("JPEG", (320, 240), quality=95)
    router = Router(
        {
            "/page.jpg": response(200, b"<html>login</html>", {"Content-Type": "image/jpeg"}),
            "/photo": response(200, jpeg, {"Content-Type": "text/html"}),
        }
    )
    server = RawServer(router)
    fetcher = HttpxFetcher(FetchOptions(allow_private_networks=True))
    try:
        page = await fetcher.fetch(server.url("/page.jpg"))
        photo = await fetcher.fetch(server.url("/photo"))
    finally:
        await fetcher.aclose()
        server.stop()
    refused(page.data, "not_an_image")
    assert compress_image(photo.data).content_type == "image/jpeg"
