"""The compiled accelerator for PNGs: rows inflated by libdeflate and unfiltered in C give
exactly the pixels the PNG specification (and Pillow) gives, and anything wrong in the
file leaves the image to libspng and Pillow."""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from c_variants import build_variant
from imgcompress_core import _fast
from imgcompress_core._unfilter import unfilter


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def _filtered(pixels: bytes, width: int, height: int, bpp: int, types: list[int]) -> bytes:
    """The rows as the specification's filters write them, one type a row."""
    row, out = width * bpp, bytearray()
    previous = bytes(row)
    for y in range(height):
        raw = pixels[y * row : (y + 1) * row]
        out.append(types[y])
        for i, value in enumerate(raw):
            a = raw[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            guess = [0, a, b, (a + b) // 2, _paeth(a, b, c)][types[y]]
            out.append((value - guess) % 256)
        previous = raw
    return bytes(out)


def _chunk(name: bytes, body: bytes, crc_flip: int = 0) -> bytes:
    crc = zlib.crc32(name + body) ^ crc_flip
    return struct.pack(">I", len(body)) + name + body + struct.pack(">I", crc)


def _png(
    width: int,
    height: int,
    bpp: int,
    stream: bytes,
    *,
    pieces: int = 1,
    interlace: int = 0,
    bad_crc: bool = False,
    end: bool = True,
) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 6 if bpp == 4 else 2, 0, 0, interlace)
    step = max(1, -(-len(stream) // pieces))
    idats = [
        _chunk(b"IDAT", stream[at : at + step], crc_flip=int(bad_crc and at == 0))
        for at in range(0, len(stream), step)
    ]
    text = _chunk(b"tEXt", b"Comment\0made by the tests")
    tail = _chunk(b"IEND", b"") if end else b""
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + text + b"".join(idats) + tail


def _pillow(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.copy()


def _random_image(width: int, height: int, bpp: int, seed: int, levels: int = 0) -> bytes:
    """Smooth ramps with some noise; or, with ``levels``, only that many values (Paeth's
    ties, where its order of preference decides)."""
    rnd = random.Random(seed)
    if levels:
        return bytes(rnd.randrange(levels) for _ in range(width * height * bpp))
    smooth = [(x * 7 + y * 3) % 256 for y in range(height) for x in range(width * bpp)]
    return bytes(v if rnd.random() < 0.7 else rnd.randrange(256) for v in smooth)


def test_the_accelerator_is_built() -> None:
    # the tests install a C compiler (.ci/run); a missing extension fails here, not skips
    assert _fast._unfilterer() is not None


def test_the_corpus_pngs_decode_to_pillows_pixels(shared_corpus: Path) -> None:
    files = sorted(shared_corpus.glob("p*.png"))
    assert len(files) == 10
    for path in files:
        data = path.read_bytes()
        reference = _pillow(data)
        samples = len(reference.getbands())
        assert _fast._inflated_png(data, *reference.size, samples) is not None, path.name
        decoded = _fast.decode_png(data)
        assert decoded is not None and decoded.mode == reference.mode, path.name
        assert decoded.tobytes() == reference.tobytes(), path.name


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 40),
    height=st.integers(1, 24),
    bpp=st.sampled_from([3, 4]),
    seed=st.integers(0, 2**32),
    types=st.lists(st.integers(0, 4), min_size=24, max_size=24),
    pieces=st.integers(1, 5),
    level=st.integers(0, 9),
    levels=st.sampled_from([0, 2, 4]),
)
def test_every_filter_type_gives_the_specifications_pixels(
    width: int,
    height: int,
    bpp: int,
    seed: int,
    types: list[int],
    pieces: int,
    level: int,
    levels: int,
) -> None:
    pixels = _random_image(width, height, bpp, seed, levels)
    stream = zlib.compress(_filtered(pixels, width, height, bpp, types), level)
    data = _png(width, height, bpp, stream, pieces=pieces)
    ours = _fast._inflated_png(data, width, height, bpp)
    assert ours is not None and bytes(ours) == pixels
    decoded = _fast.decode_png(data)
    assert decoded is not None and decoded.tobytes() == _pillow(data).tobytes()
    assert _pillow(data).tobytes() == Image.frombytes(decoded.mode, decoded.size, pixels).tobytes()


def _sample(bpp: int = 3, width: int = 9, height: int = 5) -> tuple[bytes, bytes]:
    pixels = _random_image(width, height, bpp, 1)
    return pixels, _filtered(pixels, width, height, bpp, [0, 1, 2, 3, 4][:height])


def test_a_bad_crc_or_zlib_stream_is_left_to_libspng_and_pillow() -> None:
    _, rows = _sample()
    stream = zlib.compress(rows)
    damaged_adler = stream[:-1] + bytes([stream[-1] ^ 1])
    for data in (
        _png(9, 5, 3, stream, bad_crc=True),
        _png(9, 5, 3, damaged_adler),
        _png(9, 5, 3, stream[: len(stream) // 2]),
        _png(9, 5, 3, zlib.compress(rows + b"\0" * 28)),  # a row too many
        _png(9, 5, 3, zlib.compress(rows[:-28])),  # a row too few
        _png(9, 5, 3, stream)[:-30],  # cut inside the pixels' chunk
    ):
        assert _fast._inflated_png(data, 9, 5, 3) is None


def test_a_misplaced_end_or_a_bad_chunk_name_is_left_to_libspng_and_pillow() -> None:
    """Files Pillow refuses before it reads any pixels are not decoded here either."""
    pixels, rows = _sample()
    data = _png(9, 5, 3, zlib.compress(rows))
    first_idat = data.index(b"IDAT") - 4
    for inserted in (_chunk(b"IEND", b""), _chunk(b"a\0b!", b"odd")):
        broken = data[:first_idat] + inserted + data[first_idat:]
        assert _fast._inflated_png(broken, 9, 5, 3) is None
        with pytest.raises((OSError, SyntaxError)):
            _pillow(broken)
    ours = _fast._inflated_png(data, 9, 5, 3)
    assert ours is not None and bytes(ours) == pixels


def test_an_unknown_filter_type_is_left_to_libspng_and_pillow() -> None:
    _, rows = _sample()
    broken = bytearray(rows)
    broken[2 * 28] = 5  # the third row's filter type
    data = _png(9, 5, 3, zlib.compress(bytes(broken)))
    assert _fast._inflated_png(data, 9, 5, 3) is None
    with pytest.raises(OSError, match="unrecognized data stream"):
        _pillow(data)  # and Pillow reports the file broken


def test_a_png_without_its_end_chunk_is_still_decoded() -> None:
    pixels, rows = _sample(bpp=4)
    data = _png(9, 5, 4, zlib.compress(rows), end=False)
    ours = _fast._inflated_png(data, 9, 5, 4)
    assert ours is not None and bytes(ours) == pixels


_ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2)]
_ADAM7 += [(0, 1, 1, 2)]  # (first column, first row, column step, row step) of each pass


def test_an_interlaced_png_is_not_the_accelerators_and_decodes_the_same() -> None:
    width, height, bpp = 13, 11, 3
    pixels = _random_image(width, height, bpp, 5)
    stream = bytearray()
    for x0, y0, dx, dy in _ADAM7:  # each pass a sub-image of unfiltered rows
        for y in range(y0, height, dy):
            columns = range(x0, width, dx)
            if columns:
                stream.append(0)
                for x in columns:
                    stream += pixels[(y * width + x) * bpp : (y * width + x + 1) * bpp]
    data = _png(width, height, bpp, zlib.compress(bytes(stream)), interlace=1)
    assert _pillow(data).tobytes() == Image.frombytes("RGB", (width, height), pixels).tobytes()
    decoded = _fast.decode_png(data)  # libspng's, as the accelerator takes no interlacing
    assert decoded is not None and decoded.tobytes() == _pillow(data).tobytes()


def test_the_buffer_must_be_the_rows_of_the_size_given() -> None:
    with pytest.raises(ValueError, match="filtered rows"):
        unfilter(bytearray(10), 3, 3, 3)
    with pytest.raises(ValueError, match="filtered rows"):
        unfilter(bytearray(7), 2, 1, 5)
    with pytest.raises(TypeError):
        unfilter(b"\0" * 10, 3, 1, 3)  # type: ignore[arg-type]  # read-only bytes
    rows = bytearray(b"\x01" + bytes(range(1, 7)))  # one row of Sub: 1..6 -> 1,2,3,5,7,9
    assert unfilter(rows, 2, 1, 3) is True
    assert bytes(rows[:6]) == bytes([1, 2, 3, 5, 7, 9])


def test_the_bytewise_loops_for_machines_without_sse2_agree(tmp_path: Path) -> None:
    """The C file's loops for other CPUs, built here with UNFILTER_BYTEWISE, give the
    same pixels as the SSE2 ones on every filter type and pixel size."""
    bytewise = build_variant("_unfilter", "UNFILTER_BYTEWISE", tmp_path)
    rnd = random.Random(11)
    for bpp in (3, 4):
        for width, height, levels in [(1, 1, 0), (1, 7, 0), (2, 3, 4), (17, 9, 0), (64, 5, 4)]:
            pixels = _random_image(width, height, bpp, rnd.randrange(2**32), levels)
            types = [rnd.randrange(5) for _ in range(height)]
            rows = _filtered(pixels, width, height, bpp, types)
            ours, theirs = bytearray(rows), bytearray(rows)
            assert unfilter(ours, width, height, bpp) and bytewise.unfilter(
                theirs, width, height, bpp
            )
            assert bytes(theirs[: len(pixels)]) == bytes(ours[: len(pixels)]) == pixels
