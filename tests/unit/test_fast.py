"""libspng decodes the PNGs it takes exactly as Pillow does, and leaves the rest to Pillow;
imagecodecs re-encodes the plain JPEGs exactly as Pillow does.

The JPEG tests here are the pixel path's: the compiled accelerator, which re-quantises
4:2:0 JPEGs without decoding them and does not give Pillow's bytes, is switched off for
them (its own tests: ``test_requantise.py``)."""

from __future__ import annotations

import io
import random
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image, ImageCms

from imgcompress_core import _decode, _fast, compress
from imgcompress_core.compress import CompressedImage, CompressOptions, compress_image
from imgcompress_core.errors import CompressionError
from imgcompress_core.policy import OutputPolicy


@pytest.fixture(autouse=True, scope="module")
def _pixel_path_only() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compress, "jpeg_requantised", lambda data, quality: None)
        yield


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
        fast = _fast.decode_png(data)
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
    fast = _fast.decode_png(data)
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
    assert _fast.decode_png(data) is None


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
    assert _fast.decode_png(bytes(data)) is None
    got = _outcome(bytes(data))
    monkeypatch.setattr(_decode, "decode_png", lambda data: None)
    assert got == _outcome(bytes(data)) == "corrupt_image"


def test_a_bad_pixel_chunk_checksum_is_ignored_by_both_decoders() -> None:
    data = bytearray(_png(_noise("RGB", (40, 30), 8)))
    start, length = _idat(data)
    data[start + length] ^= 0xFF  # the CRC after the chunk's data
    fast = _fast.decode_png(bytes(data))
    assert fast is not None
    assert fast.tobytes() == _pillow(bytes(data)).tobytes()


def test_a_truncated_png_still_fails_as_corrupt() -> None:
    data = _png(_noise("RGBA", (60, 60), 3), compress_level=1)
    with pytest.raises(CompressionError) as caught:
        compress_image(data[: len(data) * 2 // 3])
    assert caught.value.code == "corrupt_image"


def test_an_image_over_the_cap_is_left_to_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _png(_noise("RGB", (50, 40), 1))
    monkeypatch.setattr(_fast, "MAX_PIXELS", 50 * 40 - 1)
    assert _fast.decode_png(data) is None
    monkeypatch.setattr(_fast, "MAX_PIXELS", 50 * 40)
    assert _fast.decode_png(data) is not None


def test_without_imagecodecs_pillow_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fast, "available", lambda: False)
    assert _fast.decode_png(_png(_noise("RGB", (9, 9), 2))) is None


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
    assert _fast.decode_png(data) is None  # 10^10 pixels: over MAX_PIXELS


# JPEG: re-encoded as it is, on arrays, with the Pillow path's result


def _jpeg(image: Image.Image, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", **params)
    return out.getvalue()


def _result(data: bytes, options: CompressOptions) -> object:
    try:
        return compress_image(data, options)
    except CompressionError as exc:
        return exc.code


class _Spy:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = compress.jpeg_round_trip

        def counted(*args: object, **kwargs: object) -> bytes | None:
            self.calls += 1
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(compress, "jpeg_round_trip", counted)


def _both(
    data: bytes, monkeypatch: pytest.MonkeyPatch, options: CompressOptions = CompressOptions()
) -> tuple[object, object, int]:
    """The result with the fast path allowed, the Pillow path's, and the fast path's calls."""
    spy = _Spy(monkeypatch)
    fast = _result(data, options)
    with monkeypatch.context() as patch:
        patch.setattr(compress, "_as_it_is", lambda policy, options: False)
        slow = _result(data, options)
    return fast, slow, spy.calls


def test_corpus_jpegs_come_out_byte_for_byte_as_from_pillow(
    shared_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = 0
    for path in sorted(shared_corpus.glob("j*.jpg"))[::4]:
        fast, slow, calls = _both(path.read_bytes(), monkeypatch)
        assert fast == slow, path.name
        taken += calls
    assert taken >= 9  # the corpus's photos need no turn


_PHOTO = _noise("RGB", (96, 64), 11)
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
_GREY_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()


def _recompressed(image: Image.Image) -> bytes:
    """A JPEG that compressing again cannot make smaller: one it wrote itself."""
    return compress_image(_jpeg(image, quality=95)).data


def _turned() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    return _jpeg(_PHOTO, quality=95, exif=exif.tobytes())


@pytest.mark.parametrize(
    ("make", "fast_path"),
    [
        pytest.param(lambda: _jpeg(_PHOTO, quality=95), True, id="rgb"),
        pytest.param(lambda: _jpeg(_PHOTO.convert("L"), quality=95), True, id="grey"),
        pytest.param(lambda: _jpeg(_PHOTO, quality=95, subsampling=0), True, id="4:4:4"),
        pytest.param(lambda: _jpeg(_PHOTO, quality=95, progressive=True), True, id="progressive"),
        pytest.param(lambda: _jpeg(_PHOTO, quality=95, restart_marker_rows=1), True, id="restarts"),
        pytest.param(lambda: _jpeg(_PHOTO, quality=95, icc_profile=_SRGB), True, id="icc-kept"),
        pytest.param(lambda: _recompressed(_PHOTO), True, id="kept-original"),
        pytest.param(
            lambda: _jpeg(_PHOTO, quality=95, icc_profile=_GREY_ICC), False, id="icc-dropped"
        ),
        pytest.param(_turned, False, id="exif-turn"),
        pytest.param(lambda: _jpeg(_PHOTO.convert("CMYK"), quality=95), False, id="cmyk"),
    ],
)
def test_each_kind_of_jpeg_gives_the_pillow_paths_result(
    make: object, fast_path: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert callable(make)
    data = make()
    assert isinstance(data, bytes)
    fast, slow, calls = _both(data, monkeypatch)
    assert fast == slow
    assert calls == (1 if fast_path else 0)


def test_a_kept_original_is_kept_by_the_fast_path_too(monkeypatch: pytest.MonkeyPatch) -> None:
    fast, _, calls = _both(_recompressed(_PHOTO), monkeypatch)
    assert calls == 1
    assert isinstance(fast, CompressedImage) and fast.kept_original


@pytest.mark.parametrize("keep", [0.3, 0.7, 0.95])
def test_a_truncated_jpeg_fails_or_passes_as_with_pillow(
    keep: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _jpeg(_PHOTO, quality=95)
    fast, slow, _ = _both(data[: int(len(data) * keep)], monkeypatch)
    assert fast == slow


@pytest.mark.parametrize(
    "policy",
    [
        OutputPolicy(max_width=50),
        OutputPolicy(format="webp"),
        OutputPolicy(target_quality=70),
        OutputPolicy(max_bytes=5000),
        OutputPolicy(metadata="copyright"),
        OutputPolicy(preset="web"),
    ],
    ids=repr,
)
def test_policies_that_change_more_than_the_quality_take_the_pillow_path(
    policy: OutputPolicy, monkeypatch: pytest.MonkeyPatch, scorer: None
) -> None:
    _, _, calls = _both(_jpeg(_PHOTO, quality=95), monkeypatch, CompressOptions(policy=policy))
    assert calls == 0


def test_another_quality_is_still_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    options = CompressOptions(policy=OutputPolicy(quality=80, format="jpeg"))
    fast, slow, calls = _both(_jpeg(_PHOTO, quality=95), monkeypatch, options)
    assert fast == slow and calls == 1
    assert isinstance(fast, CompressedImage) and fast.quality == 80


def test_a_scan_bomb_is_refused_before_the_fast_path_decodes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = _jpeg(_PHOTO, quality=95, progressive=True)
    fast, slow, calls = _both(data, monkeypatch, CompressOptions(max_scans=2))
    assert fast == slow == "image_too_complex"
    assert calls == 0


@settings(max_examples=60)
@given(flips=st.lists(st.tuples(st.floats(0.02, 1.0), st.integers(1, 255)), min_size=1, max_size=4))
def test_damaged_jpegs_get_the_pillow_paths_answer(flips: list[tuple[float, int]]) -> None:
    """Whatever the damage, the answer (result or error code) is the Pillow path's."""
    data = bytearray(_jpeg(_PHOTO, quality=90, progressive=True))
    for where, mask in flips:
        data[min(len(data) - 1, int(len(data) * where))] ^= mask
    with pytest.MonkeyPatch.context() as patch:
        fast = _result(bytes(data), CompressOptions())
        patch.setattr(compress, "_as_it_is", lambda policy, options: False)
        slow = _result(bytes(data), CompressOptions())
    assert fast == slow
