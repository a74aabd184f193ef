"""Transparent WebPs with the alpha compressed in one cheap trial: Pillow's pixels exactly,
about Pillow's bytes, every chunk kept."""

from __future__ import annotations

import io
import random
import struct
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms

from imgcompress_core import _webp_alpha
from imgcompress_core.compress import compress_image


def _pillow_webp(image: Image.Image, **extra: object) -> bytes:
    out = io.BytesIO()
    image.save(out, "WEBP", quality=50, method=3, **extra)
    return out.getvalue()


def _decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.copy()


def _chunk_names(data: bytes) -> list[bytes]:
    names, at = [], 12
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8  # the RIFF size is right
    while at < len(data):
        size = struct.unpack_from("<I", data, at + 4)[0]
        names.append(data[at : at + 4])
        at += 8 + size + (size & 1)
    assert at == len(data)
    return names


def _alph_header(data: bytes) -> int:
    at = 12
    while at < len(data):
        size = struct.unpack_from("<I", data, at + 4)[0]
        if data[at : at + 4] == b"ALPH":
            return data[at + 8]
        at += 8 + size + (size & 1)
    raise AssertionError("no ALPH chunk")


def _reference_residuals(alpha: list[list[int]]) -> list[list[int]]:
    """The gradient filter, pixel by pixel, as the WebP container specification says."""
    out = []
    for y, row in enumerate(alpha):
        line = []
        for x, value in enumerate(row):
            if x == 0 and y == 0:
                predicted = 0
            elif y == 0:
                predicted = row[x - 1]
            elif x == 0:
                predicted = alpha[y - 1][0]
            else:
                gradient = row[x - 1] + alpha[y - 1][x] - alpha[y - 1][x - 1]
                predicted = min(255, max(0, gradient))
            line.append((value - predicted) % 256)
        out.append(line)
    return out


def _cut_out(size: tuple[int, int], seed: int, kind: str) -> Image.Image:
    """An RGBA picture whose alpha is binary, soft-edged, noisy or a ramp."""
    rnd = random.Random(seed)
    width, height = size
    colour = Image.frombytes("RGB", size, rnd.randbytes(width * height * 3))
    colour = Image.blend(Image.linear_gradient("L").resize(size).convert("RGB"), colour, 0.4)
    if kind == "noise":
        alpha = Image.frombytes("L", size, rnd.randbytes(width * height))
    elif kind == "ramp":
        alpha = Image.linear_gradient("L").rotate(rnd.choice((0, 90, 45))).resize(size)
    else:
        alpha = Image.new("L", size, 0)
        cx, cy, r = rnd.random() * width, rnd.random() * height, max(width, height) / 3
        ys, xs = np.mgrid[0:height, 0:width]
        inside = np.hypot(xs - cx, ys - cy) - r
        soft = np.clip(128 - inside * 64, 0, 255) if kind == "soft" else (inside < 0) * 255
        alpha = Image.fromarray(soft.astype(np.uint8))
    image = colour.convert("RGBA")
    image.putalpha(alpha)
    return image


def test_the_residuals_are_the_specifications_gradient_filter() -> None:
    rnd = random.Random(7)
    for height, width in [(1, 1), (1, 9), (9, 1), (5, 7), (300, 3)]:  # 300 > one strip
        alpha = np.frombuffer(rnd.randbytes(height * width), np.uint8).reshape(height, width)
        expected = _reference_residuals(alpha.tolist())
        assert _webp_alpha.gradient_residuals(alpha).tolist() == expected


def test_the_corpus_cut_outs_keep_pillows_pixels_and_nearly_its_bytes(
    shared_corpus: Path,
) -> None:
    files = sorted(shared_corpus.glob("p*_a.png"))
    assert len(files) == 5
    ours_total = pillow_total = 0
    for path in files:
        image = _decoded(path.read_bytes()).convert("RGBA")
        ours = _webp_alpha.encode_rgba(image, 50, 3, {})
        assert ours is not None, path.name
        pillow = _pillow_webp(image)
        assert _alph_header(ours) == 0b0000_1101, path.name  # gradient filter, lossless
        assert _decoded(ours).tobytes() == _decoded(pillow).tobytes(), path.name
        assert len(ours) <= len(pillow) * 1.05, path.name
        ours_total, pillow_total = ours_total + len(ours), pillow_total + len(pillow)
    assert ours_total <= pillow_total * 1.02


@settings(max_examples=40)
@given(
    width=st.integers(1, 90),
    height=st.integers(1, 300),
    seed=st.integers(0, 2**32),
    kind=st.sampled_from(["binary", "soft", "noise", "ramp"]),
    quality=st.integers(1, 100),
)
def test_any_cut_out_decodes_to_pillows_pixels(
    width: int, height: int, seed: int, kind: str, quality: int
) -> None:
    image = _cut_out((width, height), seed, kind)
    ours = _webp_alpha.encode_rgba(image, quality, 3, {})
    assert ours is not None
    pillow = io.BytesIO()
    image.save(pillow, "WEBP", quality=quality, method=3)
    decoded = _decoded(ours)
    assert decoded.mode == "RGBA"
    assert decoded.tobytes() == _decoded(pillow.getvalue()).tobytes()
    assert np.array_equal(np.asarray(decoded.getchannel("A")), np.asarray(image.getchannel("A")))


def test_an_opaque_rgba_image_is_pillows_file_without_an_alpha_chunk() -> None:
    image = _cut_out((40, 30), 1, "binary")
    image.putalpha(255)
    ours = _webp_alpha.encode_rgba(image, 50, 3, {})
    assert ours is not None and b"ALPH" not in _chunk_names(ours)
    assert _decoded(ours).tobytes() == _decoded(_pillow_webp(image)).tobytes()


def test_only_rgba_images_are_taken() -> None:
    for mode in ("RGB", "LA", "L", "P"):
        assert _webp_alpha.encode_rgba(Image.new(mode, (8, 8)), 50, 3, {}) is None


def test_the_icc_profile_and_metadata_chunks_are_kept() -> None:
    image = _cut_out((64, 48), 3, "soft")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010E] = "a cut-out"  # ImageDescription
    xmp = b"<x:xmpmeta xmlns:x='adobe:ns:meta/'></x:xmpmeta>"
    extra = {"icc_profile": icc, "exif": exif.tobytes(), "xmp": xmp}
    ours = _webp_alpha.encode_rgba(image, 50, 3, extra)
    assert ours is not None
    assert _chunk_names(ours) == _chunk_names(_pillow_webp(image, **extra))
    decoded = _decoded(ours)
    assert decoded.info["icc_profile"] == icc
    assert decoded.getexif()[0x010E] == "a cut-out"
    assert decoded.info["xmp"] == xmp
    assert decoded.tobytes() == _decoded(_pillow_webp(image, **extra)).tobytes()


def test_the_compressor_writes_transparent_webps_this_way(shared_corpus: Path) -> None:
    assert _webp_alpha.available()  # numpy comes with imgcompress[fast], as the tests install
    data = (shared_corpus / "p08_Kite_a.png").read_bytes()
    result = compress_image(data)
    assert result.content_type == "image/webp"
    assert _alph_header(result.data) == 0b0000_1101
    pillow = _pillow_webp(_decoded(data).convert("RGBA"))  # the default job: q50, same size
    assert _decoded(result.data).tobytes() == _decoded(pillow).tobytes()
