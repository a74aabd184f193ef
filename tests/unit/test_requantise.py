"""The compiled accelerator: a 4:2:0 or grey JPEG re-quantised in the DCT domain to the
tables of the target quality, without decoding its pixels, with the quality of
decoding and encoding them; everything else left to the pixel path."""

from __future__ import annotations

import io
import os
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, JpegImagePlugin

from c_variants import build_variant
from imgcompress_core import _fast, _score, compress
from imgcompress_core._jpeg import segments
from imgcompress_core.compress import CompressedImage, CompressOptions, compress_image
from imgcompress_core.errors import CompressionError

_DQT, _DRI, _SOF0 = 0xDB, 0xDD, 0xC0


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    """The accelerator is built wherever a C compiler and libjpeg's headers are (CI
    installs both); these tests fail, never skip, without it."""
    if not _fast.requantiser_available():
        pytest.fail(
            "imgcompress_core._requantise was not built: install a C compiler and libjpeg's "
            "headers (Debian: apt-get install gcc libjpeg-dev), then pip install -e '.[test]'"
        )


def _photo(size: tuple[int, int] = (203, 141), seed: int = 5) -> Image.Image:
    """Structure and noise, sizes that are not multiples of a block."""
    rnd = random.Random(seed)
    smooth = Image.radial_gradient("L").resize(size).convert("RGB")
    noise = Image.frombytes("RGB", size, rnd.randbytes(size[0] * size[1] * 3))
    return Image.blend(smooth, noise, 0.25)


def _jpeg(image: Image.Image, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", **params)
    return out.getvalue()


def _open(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.copy()


def _tables(data: bytes) -> dict[int, list[int]]:
    with Image.open(io.BytesIO(data)) as im:
        assert isinstance(im, JpegImagePlugin.JpegImageFile)
        return {slot: list(table) for slot, table in im.quantization.items()}


def _pixel_path(data: bytes, quality: int = 50) -> bytes:
    """What the pipeline writes without the accelerator (Pillow's bytes)."""
    with Image.open(io.BytesIO(data)) as im:
        encoded = _fast.jpeg_round_trip(data, im.mode, im.size, quality)
    assert encoded is not None
    return encoded


def _markers(data: bytes) -> list[int]:
    return [segment.marker for segment in segments(data)]


@pytest.mark.parametrize("quality", [30, 50, 80])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_the_output_has_the_pixel_paths_size_tables_and_markers(quality: int, mode: str) -> None:
    data = _jpeg(_photo().convert(mode), quality=95)
    out = _fast.jpeg_requantised(data, quality)
    assert out is not None
    reference = _pixel_path(data, quality)
    assert _tables(out) == _tables(reference)
    assert _markers(out) == _markers(reference)  # baseline, JFIF, one table per DQT
    image = _open(out)
    assert (image.mode, image.size) == (mode, (203, 141))
    assert image.info.get("jfif_density") == _open(reference).info.get("jfif_density")


def test_its_quality_is_that_of_decoding_and_encoding(scorer: None) -> None:
    """Scored against the source's pixels: within a point of the pixel path, for at most
    5 % more bytes on this noisy picture (noise is the worst case for re-quantising)."""
    data = _jpeg(_photo((640, 480)), quality=92)
    source = _open(data)
    out = _fast.jpeg_requantised(data, 50)
    assert out is not None
    reference = _pixel_path(data)
    assert _score.score(source, _open(out)) >= _score.score(source, _open(reference)) - 1.0
    assert len(out) <= 1.05 * len(reference)


def test_tables_equal_to_the_targets_leave_every_pixel_as_it_was() -> None:
    """Scaling by one changes no coefficient: the same pixels, decoded."""
    data = _jpeg(_photo(), quality=50)  # libjpeg's quality-50 tables already
    out = _fast.jpeg_requantised(data, 50)
    assert out is not None
    assert _open(out).tobytes() == _open(data).tobytes()


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ({"subsampling": 0}, "4:4:4 would need its chroma halved"),
        ({"subsampling": 1}, "4:2:2 likewise"),
        ({"quality": 30}, "its steps are coarser than quality 50's"),
        ({"qtables": [[1] * 64, [1] * 64, [1] * 64]}, "a table for each chroma component"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_what_it_does_not_take_goes_to_the_pixel_path(params: dict[str, object], why: str) -> None:
    data = _jpeg(_photo(), **({"quality": 95} | params))
    assert _fast.jpeg_requantised(data, 50) is None, why


def test_cmyk_is_not_taken() -> None:
    assert _fast.jpeg_requantised(_jpeg(_photo().convert("CMYK"), quality=95), 50) is None


@pytest.mark.parametrize(
    "params",
    [{"progressive": True}, {"restart_marker_rows": 1}, {"optimize": True}],
    ids=["progressive", "restarts", "optimised"],
)
def test_any_4_2_0_coding_becomes_one_baseline_scan(params: dict[str, object]) -> None:
    data = _jpeg(_photo(), quality=95, **params)
    out = _fast.jpeg_requantised(data, 50)
    assert out is not None
    markers = _markers(out)
    assert _SOF0 in markers and markers.count(0xDA) == 1 and _DRI not in markers
    assert _open(out).size == (203, 141)


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9, 0.999])
def test_truncated_data_is_left_to_the_pixel_path(keep: float) -> None:
    data = _jpeg(_photo(), quality=95)
    assert _fast.jpeg_requantised(data[: int(len(data) * keep)], 50) is None


@pytest.mark.parametrize(
    "data", [b"", b"\xff\xd8", b"\xff\xd8\xff\xd9", b"GIF89a" + bytes(100), bytes(5000)]
)
def test_what_is_not_a_jpeg_gives_none(data: bytes) -> None:
    assert _fast.jpeg_requantised(data, 50) is None


@pytest.mark.parametrize("quality", [0, 101, -5])
def test_a_quality_out_of_range_is_refused(quality: int) -> None:
    data = _jpeg(_photo(), quality=95)
    with pytest.raises(ValueError, match="quality must be from 1 to 100"):
        _fast.jpeg_requantised(data, quality)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), min_size=1, max_size=6),
    progressive=st.booleans(),
)
def test_damaged_jpegs_give_none_or_a_jpeg_of_the_same_size(
    flips: list[tuple[float, int]], progressive: bool
) -> None:
    """Whatever the damage (headers included), libjpeg's errors come back as None, never a
    crash, and anything it does take decodes."""
    data = bytearray(_jpeg(_photo((64, 48)), quality=90, progressive=progressive))
    for where, mask in flips:
        data[min(len(data) - 1, int(len(data) * where))] ^= mask
    out = _fast.jpeg_requantised(bytes(data), 50)
    if out is not None:
        with Image.open(io.BytesIO(out)) as image:
            image.load()
            assert image.format == "JPEG" and image.mode in ("RGB", "L")


# The Huffman tables: counted while scaling, built as libjpeg builds them


@pytest.fixture(scope="module")
def two_passes(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The accelerator built with REQUANTISE_TWO_PASSES: libjpeg gathers the symbol counts
    in a pass of its own and builds the tables itself."""
    into = tmp_path_factory.mktemp("two_passes")
    return build_variant("_requantise", "REQUANTISE_TWO_PASSES", into, libraries=("jpeg",))


def test_the_corpus_photos_get_libjpegs_own_bytes(
    shared_corpus: Path, two_passes: ModuleType
) -> None:
    compared = 0
    for path in sorted(shared_corpus.glob("j*.jpg")):
        data = path.read_bytes()
        for quality in (20, 50, 80):
            ours = _fast.jpeg_requantised(data, quality)
            assert ours == two_passes.requantise(data, quality), (path.name, quality)
            compared += ours is not None
    assert compared == 3 * 33  # the corpus's 33 4:2:0 photos, at each quality


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    size=st.tuples(st.integers(1, 90), st.integers(1, 90)),
    mode=st.sampled_from(["RGB", "L"]),
    noise=st.floats(0.0, 1.0),
    source_quality=st.integers(40, 100),
    quality=st.integers(1, 100),
    progressive=st.booleans(),
    restarts=st.sampled_from([0, 1, 3]),
    seed=st.integers(0, 2**32),
)
def test_any_image_gets_libjpegs_own_bytes(
    two_passes: ModuleType,
    size: tuple[int, int],
    mode: str,
    noise: float,
    source_quality: int,
    quality: int,
    progressive: bool,
    restarts: int,
    seed: int,
) -> None:
    """Every size (edge MCUs the writer fills with blocks of its own), grey or colour,
    flat or noisy, any coding of the source and any target quality; taken whenever the
    target's steps are no finer than the source's."""
    rnd = random.Random(seed)
    smooth = Image.linear_gradient("L").resize(size).convert(mode)
    grain = Image.frombytes(mode, size, rnd.randbytes(size[0] * size[1] * len(mode)))
    data = _jpeg(
        Image.blend(smooth, grain, noise),
        quality=source_quality,
        progressive=progressive,
        restart_marker_blocks=restarts,
    )
    ours = _fast.jpeg_requantised(data, quality)
    assert ours == two_passes.requantise(data, quality)
    if quality <= source_quality:
        assert ours is not None


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), min_size=1, max_size=4))
def test_damaged_jpegs_get_libjpegs_own_answer(
    two_passes: ModuleType, flips: list[tuple[float, int]]
) -> None:
    data = bytearray(_jpeg(_photo((50, 37)), quality=90))
    for where, mask in flips:
        data[min(len(data) - 1, int(len(data) * where))] ^= mask
    assert _fast.jpeg_requantised(bytes(data), 50) == two_passes.requantise(bytes(data), 50)


def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def _coefficient_too_big_to_code() -> bytes:
    """An 8x8 grey JPEG, valid for a decoder, whose one AC coefficient is 32767: its own
    Huffman table gives that coefficient 15 bits, where a baseline JPEG codes at most 10."""
    sof = _segment(0xC0, struct.pack(">BHHB", 8, 8, 8, 1) + bytes([1, 0x11, 0]))
    dqt = _segment(0xDB, bytes([0]) + bytes([1] * 64))
    dc_table = bytes([0x00, 1]) + bytes(15) + bytes([0])  # one code, '0': difference 0
    ac_table = bytes([0x10, 1, 1]) + bytes(14) + bytes([0x0F, 0x00])  # '0': 15 bits, '10': EOB
    sos = _segment(0xDA, bytes([1, 1, 0x00, 0, 63, 0]))
    bits = "0" + "0" + "1" * 15 + "10"  # DC 0, then +32767, then end of block
    bits += "1" * (-len(bits) % 8)
    entropy = int(bits, 2).to_bytes(len(bits) // 8, "big").replace(b"\xff", b"\xff\x00")
    dht = _segment(0xC4, dc_table + ac_table)
    return b"\xff\xd8" + dqt + sof + dht + sos + entropy + b"\xff\xd9"


def test_a_coefficient_too_big_to_code_is_left_to_the_pixel_path(
    two_passes: ModuleType,
) -> None:
    data = _coefficient_too_big_to_code()
    assert _open(data).size == (8, 8)  # libjpeg decodes it
    assert _fast.jpeg_requantised(data, 95) is None
    assert two_passes.requantise(data, 95) is None  # libjpeg's own passes refuse it too
    result = compress_image(data)
    assert result.content_type == "image/jpeg" and _open(result.data).size == (8, 8)


# In the pipeline


def test_compress_image_takes_it_for_a_plain_jpeg() -> None:
    data = _jpeg(_photo(), quality=95)
    result = compress_image(data)
    assert result.data == _fast.jpeg_requantised(data, 50)
    assert (result.quality, result.kept_original, result.note) == (50, False, None)


def test_the_icc_profile_is_kept_as_on_the_pixel_path() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = _jpeg(_photo(), quality=95, icc_profile=srgb)
    result = compress_image(data)
    assert _open(result.data).info.get("icc_profile") == srgb
    assert _open(result.data).tobytes() == _open(_fast.jpeg_requantised(data, 50) or b"").tobytes()


def test_an_image_it_does_not_take_gets_the_pillow_paths_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = _jpeg(_photo(), quality=95, subsampling=0)
    with monkeypatch.context() as patch:
        patch.setattr(compress, "jpeg_requantised", lambda data, quality: None)
        pillow = compress_image(data)
    assert compress_image(data) == pillow


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.floats(0.02, 1.0), st.integers(1, 255)), min_size=1, max_size=4))
def test_damaged_jpegs_get_an_answer_the_pillow_path_could_give(
    flips: list[tuple[float, int]],
) -> None:
    """A damaged JPEG the accelerator refuses gets the Pillow path's answer; one it takes
    (damage libjpeg reads without a warning) gets a JPEG of the same size."""
    data = bytearray(_jpeg(_photo((64, 48)), quality=90))
    for where, mask in flips:
        data[min(len(data) - 1, int(len(data) * where))] ^= mask

    def answer() -> CompressedImage | str:
        try:
            return compress_image(bytes(data), CompressOptions())
        except CompressionError as exc:
            return exc.code

    fast = answer()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compress, "jpeg_requantised", lambda data, quality: None)
        slow = answer()
    if _fast.jpeg_requantised(bytes(data), 50) is None:
        assert fast == slow
    else:
        assert isinstance(fast, CompressedImage) and isinstance(slow, CompressedImage)
        assert (fast.width, fast.height) == (slow.width, slow.height)


def test_corpus_photos_keep_their_quality(shared_corpus: Path, scorer: None) -> None:
    """The corpus's 4:2:0 photos (every fourth): SSIMULACRA2 against the source within
    1.5 of the pixel path's each, and no lower on average; at most 3 % more bytes each
    (benchmarks/RESULTS.md, section 9: 0.8 % over the corpus)."""
    taken, diffs, ratio = 0, [], []
    for path in sorted(shared_corpus.glob("j*.jpg"))[::4]:
        data = path.read_bytes()
        out = _fast.jpeg_requantised(data, 50)
        with Image.open(path) as im:
            four_two_zero = JpegImagePlugin.get_sampling(im) == 2 and im.mode == "RGB"
        assert (out is not None) == four_two_zero, path.name
        if out is None:
            continue
        taken += 1
        source, reference = _open(data), _pixel_path(data)
        diffs.append(_score.score(source, _open(out)) - _score.score(source, _open(reference)))
        ratio.append(len(out) / len(reference))
        assert diffs[-1] > -1.5 and ratio[-1] < 1.03, path.name
    assert taken >= 7
    assert sum(diffs) / taken > -0.2


_FAILING_REALLOC = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
void *realloc(void *p, size_t n) {
  static void *(*real)(void *, size_t);
  static size_t fail;
  if (!real) {
    real = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
    const char *t = getenv("FAIL_REALLOC");
    fail = t ? strtoull(t, 0, 10) : 0;
  }
  return fail && n == fail ? NULL : real(p, n);
}
"""


@pytest.mark.parametrize("failing_growth", [1, 2], ids=["first", "second"])
def test_running_out_of_memory_while_the_output_grows_raises_memoryerror(
    tmp_path: Path, failing_growth: int
) -> None:
    """The output buffer starts at a quarter of the input and doubles; a failed growth,
    the first or a later one, raises MemoryError with nothing freed twice (a child
    process, its realloc failing for that one size by an LD_PRELOAD shim)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "the accelerator's tests need the C compiler it was built with"
    shim = tmp_path / "failing_realloc.so"
    (tmp_path / "shim.c").write_text(_FAILING_REALLOC)
    subprocess.run(
        [cc, "-shared", "-fPIC", "-o", str(shim), str(tmp_path / "shim.c"), "-ldl"], check=True
    )
    rnd = random.Random(1)
    noise = Image.frombytes("RGB", (700, 560), rnd.randbytes(700 * 560 * 3))
    data = _jpeg(noise, quality=60)
    start = 70_000  # the buffer's first size: a quarter of the padded input
    data += bytes(4 * start - len(data))  # bytes after EOI, which libjpeg never reads
    path = tmp_path / "noise.jpg"
    path.write_bytes(data)
    output = _fast.jpeg_requantised(data, 50)
    assert output is not None and len(output) > 2 * start  # it needs both growths
    script = (
        "import sys\nfrom imgcompress_core._fast import jpeg_requantised\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "try:\n    jpeg_requantised(data, 50)\nexcept MemoryError:\n    print('MemoryError')\n"
    )
    env = os.environ | {"LD_PRELOAD": str(shim), "FAIL_REALLOC": str(start << failing_growth)}
    run = subprocess.run(
        [sys.executable, "-c", script, str(path)], env=env, capture_output=True, text=True
    )
    assert (run.returncode, run.stdout.strip()) == (0, "MemoryError"), run.stderr
