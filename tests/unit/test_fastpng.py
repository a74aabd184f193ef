"""libspng decodes the PNGs it takes exactly as Pillow does, and leaves the rest to Pillow."""

from __future__ import annotations

import io
import random
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from imgcompress_core import _decode, _fastpng
from imgcompress_core.compress import CompressOptions, compress_image
from imgcompress_core.errors import CompressionError


def _pillow(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.copy()


def _png(image: Image.Image, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", **params)
    return out.getvalue()


def _noise(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    rnd = random.Random(seed)
    bands = len(mode)
    smooth = Image.linear_gradient("L").resize(size).convert(mode)  # some structure ...
    noise = Image.frombytes(mode, size, rnd.randbytes(size[0] * size[1] * bands))
    return Image.blend(smooth, noise, 0.3)  # ... and some that is not


def test_the_corpus_pngs_all_take_the_fast_path_with_pillows_pixels(
    shared_corpus: Path,
) -> None:
    files = sorted(shared_corpus.glob("p*.png"))
    assert len(files) == 10
    for path in files:
        data = path.read_bytes()
        fast = _fastpng.decode_png(data)
        assert fast is not None, path.name
        slow = _pillow(data)
        assert (fast.mode, fast.size) == (slow.mode, slow.size), path.name
        assert fast.tobytes() == slow.tobytes(), path.name


@settings(max_examples=25)
@given(
    mode=st.sampled_from(["RGB", "RGBA"]),
    width=st.integers(1, 70),
    height=st.integers(1, 70),
    seed=st.integers(0, 2**32),
    compress_level=st.integers(0, 9),
)
def test_any_8_bit_rgb_or_rgba_png_decodes_as_pillow_decodes_it(
    mode: str, width: int, height: int, seed: int, compress_level: int
) -> None:
    data = _png(_noise(mode, (width, height), seed), compress_level=compress_level)
    fast = _fastpng.decode_png(data)
    assert fast is not None
    assert fast.mode == mode
    assert fast.tobytes() == _pillow(data).tobytes()


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: _png(Image.new("L", (8, 8), 3)), id="greyscale"),
        pytest.param(lambda: _png(Image.new("LA", (8, 8), (3, 4))), id="grey-alpha"),
        pytest.param(lambda: _png(Image.new("P", (8, 8), 1)), id="palette"),
        pytest.param(lambda: _png(Image.new("I;16", (8, 8), 300)), id="16-bit"),
        pytest.param(
            lambda: _png(Image.new("RGB", (8, 8), (1, 2, 3)), transparency=(1, 2, 3)),
            id="transparent-colour",
        ),
        pytest.param(
            lambda: _png(Image.new("RGB", (8, 8), (1, 2, 3)), exif=b"Exif\x00\x00MM\x00*"),
            id="exif",
        ),
        pytest.param(
            lambda: _png(
                Image.new("RGB", (8, 8)),
                save_all=True,
                append_images=[Image.new("RGB", (8, 8), (9, 9, 9))],
            ),
            id="apng-chunks",
        ),
    ],
)
def test_pngs_whose_pixels_pillow_treats_specially_go_to_pillow(make: object) -> None:
    assert callable(make)
    data = make()
    assert isinstance(data, bytes)
    if b"acTL" not in data and b"eXIf" not in data and b"tRNS" not in data:
        assert data[24] != 8 or data[25] not in (2, 6), "the case must be one Pillow keeps"
    assert _fastpng.decode_png(data) is None


def _outcome(data: bytes) -> object:
    try:
        return compress_image(data).data
    except CompressionError as exc:
        return exc.code


def _idat(data: bytes) -> tuple[int, int]:
    """Where the first IDAT chunk's data starts, and its length."""
    name = data.index(b"IDAT")
    return name + 4, int.from_bytes(data[name - 4 : name], "big")


def test_a_png_libspng_refuses_is_judged_by_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    data = bytearray(_png(_noise("RGB", (40, 30), 7)))
    start, length = _idat(data)
    data[start + length // 2] ^= 0x55  # the compressed stream is broken
    assert _fastpng.decode_png(bytes(data)) is None
    got = _outcome(bytes(data))
    monkeypatch.setattr(_decode, "decode_png", lambda data: None)
    assert got == _outcome(bytes(data)) == "corrupt_image"


def test_a_bad_pixel_chunk_checksum_is_ignored_by_both_decoders() -> None:
    data = bytearray(_png(_noise("RGB", (40, 30), 8)))
    start, length = _idat(data)
    data[start + length] ^= 0xFF  # the CRC after the chunk's data
    fast = _fastpng.decode_png(bytes(data))
    assert fast is not None
    assert fast.tobytes() == _pillow(bytes(data)).tobytes()


def test_a_truncated_png_still_fails_as_corrupt() -> None:
    data = _png(_noise("RGBA", (60, 60), 3), compress_level=1)
    with pytest.raises(CompressionError) as caught:
        compress_image(data[: len(data) * 2 // 3])
    assert caught.value.code == "corrupt_image"


def test_an_image_over_the_cap_is_left_to_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _png(_noise("RGB", (50, 40), 1))
    monkeypatch.setattr(_fastpng, "MAX_PIXELS", 50 * 40 - 1)
    assert _fastpng.decode_png(data) is None
    monkeypatch.setattr(_fastpng, "MAX_PIXELS", 50 * 40)
    assert _fastpng.decode_png(data) is not None


def test_without_imagecodecs_pillow_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fastpng, "available", lambda: False)
    assert _fastpng.decode_png(_png(_noise("RGB", (9, 9), 2))) is None


def test_compressed_output_is_the_same_by_either_decoder(
    shared_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = CompressOptions()
    files = [shared_corpus / "p02_Blinds.png", shared_corpus / "p08_Kite_a.png"]
    fast = [compress_image(path.read_bytes(), options) for path in files]
    monkeypatch.setattr(_decode, "decode_png", lambda data: None)
    slow = [compress_image(path.read_bytes(), options) for path in files]
    assert [(r.data, r.content_type, r.note) for r in fast] == [
        (r.data, r.content_type, r.note) for r in slow
    ]


def test_the_header_is_read_before_the_decoder_runs() -> None:
    """A PNG whose IHDR lies about its size gets no array allocated for it."""
    ihdr = (100_000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    chunk = b"IHDR" + ihdr
    data = (
        b"\x89PNG\r\n\x1a\n"
        + len(ihdr).to_bytes(4, "big")
        + chunk
        + zlib.crc32(chunk).to_bytes(4, "big")
    )
    assert _fastpng.decode_png(data) is None  # 10^10 pixels: over MAX_PIXELS
