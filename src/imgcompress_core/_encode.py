"""Encode prepared pixels in one format, and search the quality a policy asks for.

Every format has a *ladder*: its settings ordered from the smallest, worst output to
the largest, best one. For JPEG, WebP and AVIF it is the encoder's quality, 1 to 100;
for PNG the palette size (2 to 256 colours, dithered), then lossless. The searches
walk a ladder:

- a fixed quality is one rung;
- ``target_quality``: the lowest rung whose estimated SSIMULACRA2 score reaches the
  target, found by interpolating between the rungs tried (3 to 6 encodes of the sample's
  tiles, not of the image). The estimate is the score of a sample of the image
  (:mod:`._score`) less the sample's measured bias; the whole image, when it is small;
- ``max_bytes``: from the rung chosen, the highest rung at or below it whose full
  output fits (bisection over full encodes); none fitting raises
  ``max_bytes_unreachable`` naming the cap. Dimensions never change.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image

from . import _score
from ._meta import MAX_ICC, Kept, insert_segments
from .errors import CompressionError

__all__ = [
    "CONTENT_TYPES",
    "JPEG_ENCODERS",
    "Encoded",
    "Search",
    "encode",
    "jpegli_available",
    "ladder",
    "search",
]

CONTENT_TYPES: Mapping[str, str] = {
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "avif": "image/avif",
    "png": "image/png",
    "gif": "image/gif",
}
# libjpeg-turbo through Pillow; jpegli through pyjpegli (imgcompress[jpegli]), for RGB.
JPEG_ENCODERS = ("libjpeg-turbo", "jpegli")
_JPEGLI_EXTRA = frozenset({"icc_profile", "exif", "xmp"})  # what _jpegli can write
_PALETTES = (2, 4, 8, 16, 32, 64, 128, 256)
LOSSLESS = 0  # the PNG rung above every palette
_QUALITIES = tuple(range(1, 101))
_CLOSE_ENOUGH = 2  # stop the target search when the bracket is this many rungs wide
_MAX_TRIES = 6  # sample encodes per target search, at most
# Near a score of 70 on photos (benchmarks/policy.py): the quality that reaches it, and the
# score points one quality step adds there.
_AT_70 = {"jpeg": 55, "webp": 65, "avif": 45}
_SLOPES = {"jpeg": 0.5, "webp": 0.4, "avif": 0.8}


@dataclass(frozen=True, slots=True)
class Encoded:
    """One encoded output and how it was made."""

    data: bytes
    format: str
    level: int  # the rung: a quality (jpeg, webp, avif), colours or LOSSLESS (png)
    score: float | None = None  # estimated SSIMULACRA2, when a target was searched
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Search:
    """What to search for: a fixed rung or a score, and a byte cap."""

    quality: int  # the quality asked for (or the default), used without a target
    target: float | None = None
    max_bytes: int | None = None
    jpeg_encoder: str = "libjpeg-turbo"  # one of JPEG_ENCODERS


def ladder(fmt: str) -> tuple[int, ...]:
    """Return a format's rungs, smallest output first."""
    return (*_PALETTES, LOSSLESS) if fmt == "png" else _QUALITIES


def _rung(fmt: str, quality: int) -> int:
    """The rung a quality stands for: itself, or for PNG 100 = lossless, else 256 colours."""
    if fmt != "png":
        return quality
    return LOSSLESS if quality >= 100 else 256


def encode(
    image: Image.Image,
    fmt: str,
    level: int,
    extra: Mapping[str, object],
    jpeg_encoder: str = "libjpeg-turbo",
) -> bytes:
    """Encode ``image`` as ``fmt`` at rung ``level`` with ``extra`` save parameters (ICC
    profile, metadata); raise CompressionError when the encoder fails.

    With ``jpeg_encoder="jpegli"``, an RGB JPEG is written by jpegli; Pillow's
    libjpeg-turbo writes every other mode (grey, CMYK) and format.
    """
    jpegli = fmt == "jpeg" and jpeg_encoder == "jpegli" and image.mode == "RGB"
    if jpegli and _JPEGLI_EXTRA.issuperset(extra):
        return _jpegli(image, level, extra)
    params: dict[str, object] = dict(extra)
    if fmt == "jpeg":
        params.update(quality=level, optimize=True, progressive=False)
    elif fmt == "webp":  # libwebp's effort 3 of 6: a fifth faster than its default 4
        params.update(quality=level, method=3)
    elif fmt == "avif":  # one thread: the pool already runs one image per CPU
        params.update(quality=level, speed=8, max_threads=1)
    elif fmt == "png":
        params.update(optimize=False, compress_level=9)
        if level != LOSSLESS:
            method = Image.Quantize.FASTOCTREE if image.mode == "RGBA" else None
            image = image.quantize(level, method=method, dither=Image.Dither.FLOYDSTEINBERG)
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt.upper(), **params)
    except MemoryError:
        raise
    except Exception as exc:  # not the input's fault: keep the class's generic code
        raise CompressionError(f"encoding the image as {fmt} failed: {exc}") from exc
    return buffer.getvalue()


def jpegli_available() -> bool:
    """Return whether jpegli's binding (``pyjpegli``, imgcompress[jpegli]) is installed."""
    return importlib.util.find_spec("pyjpegli") is not None


def _jpegli(image: Image.Image, level: int, extra: Mapping[str, object]) -> bytes:
    """An RGB image as a JPEG by jpegli, with the ICC profile and metadata of ``extra``."""
    import pyjpegli  # imgcompress[jpegli]; CompressOptions checks that it is installed

    try:
        data = pyjpegli.encode(image.tobytes(), image.width, image.height, quality=level)
    except MemoryError:
        raise
    except Exception as exc:
        raise CompressionError(f"encoding the image as jpeg (jpegli) failed: {exc}") from exc
    icc, exif, xmp = (extra.get(key) for key in ("icc_profile", "exif", "xmp"))
    if isinstance(icc, bytes) and len(icc) > MAX_ICC:
        raise CompressionError(f"an ICC profile of {len(icc)} bytes does not fit in a JPEG")
    kept = Kept(
        exif=exif if isinstance(exif, bytes) else None,
        xmp=xmp if isinstance(xmp, bytes) else None,
    )
    return insert_segments(data, kept, icc=icc if isinstance(icc, bytes) else None)


def search(image: Image.Image, fmt: str, want: Search, extra: Mapping[str, object]) -> Encoded:
    """Return the output of ``image`` as ``fmt`` that ``want`` asks for."""
    codec = want.jpeg_encoder
    rungs = ladder(fmt)
    notes: list[str] = []
    score = None
    if want.target is None:
        index = rungs.index(_rung(fmt, want.quality))
    else:
        index, score = _search_target(image, fmt, rungs, want.target, extra, codec)
        if score < want.target:
            notes.append(
                f"target_quality {want.target:g} was not reached even at the highest "
                f"{fmt} quality (score {score:.1f})"
            )
    data = encode(image, fmt, rungs[index], extra, codec)
    if want.max_bytes is not None and len(data) > want.max_bytes:
        index, data = _fit(image, fmt, rungs, index, want.max_bytes, extra, len(data), codec)
        if score is not None:
            score = _estimate(_score.tiles(image), fmt, rungs[index], extra, codec)
            notes.append(f"max_bytes lowered the quality below target_quality (score {score:.1f})")
    return Encoded(data, fmt, rungs[index], score, tuple(notes))


def _fit(
    image: Image.Image,
    fmt: str,
    rungs: tuple[int, ...],
    above: int,
    cap: int,
    extra: Mapping[str, object],
    size_above: int,
    codec: str,
) -> tuple[int, bytes]:
    """The highest rung below ``above`` whose output fits ``cap`` bytes, and the output."""
    lowest = encode(image, fmt, rungs[0], extra, codec)
    if len(lowest) > cap:
        raise CompressionError(
            f"the image cannot fit max_bytes ({cap} bytes) without changing its dimensions: "
            f"as {fmt} at the lowest quality it is {len(lowest)} bytes (at the quality asked "
            f"for, {size_above})",
            code="max_bytes_unreachable",
        )
    low, low_data, high = 0, lowest, above  # low fits, high does not
    while high - low > 1:
        middle = (low + high) // 2
        data = encode(image, fmt, rungs[middle], extra, codec)
        if len(data) <= cap:
            low, low_data = middle, data
        else:
            high = middle
    return low, low_data


def _search_target(
    image: Image.Image,
    fmt: str,
    rungs: tuple[int, ...],
    target: float,
    extra: Mapping[str, object],
    codec: str,
) -> tuple[int, float]:
    """The lowest rung whose sample scores at least ``target``, and its score (the top
    rung and its lower score when none does)."""
    reference = _score.tiles(image)
    scores: dict[int, float] = {}

    def tried(index: int) -> float:
        if index not in scores:
            scores[index] = _estimate(reference, fmt, rungs[index], extra, codec)
        return scores[index]

    low, high = 0, len(rungs) - 1  # the answer is in [low, high]
    guess = _first_guess(fmt, target, rungs)
    for _ in range(_MAX_TRIES):
        if tried(guess) >= target:
            high = guess
        else:
            low = guess + 1
        if high - low <= (_CLOSE_ENOUGH if fmt != "png" else 0):
            break
        if fmt == "png":
            guess = (low + high) // 2
        else:
            guess = _interpolate(scores, low, high, target, _SLOPES[fmt])
    return high, tried(high)


def _first_guess(fmt: str, target: float, rungs: tuple[int, ...]) -> int:
    """A first rung to try: from how quality and score relate on photos (benchmarks)."""
    if fmt == "png":
        return len(rungs) - 2  # 256 colours
    quality = round(_AT_70[fmt] + (target - 70) / _SLOPES[fmt])
    return max(0, min(len(rungs) - 1, quality - 1))


def _interpolate(
    scores: Mapping[int, float], low: int, high: int, target: float, slope: float
) -> int:
    """The next rung to try in [low, high): on the line through the nearest rungs tried
    on each side of the target; from the one side tried, a step of the usual slope."""
    below = [i for i in scores if i < low and scores[i] < target]
    above = [i for i in scores if i >= high and scores[i] >= target]
    estimate: float = (low + high) // 2
    if below and above:
        a, b = max(below), min(above)
        if scores[b] > scores[a]:
            estimate = a + (target - scores[a]) * (b - a) / (scores[b] - scores[a])
    elif above:
        b = min(above)
        estimate = b - (scores[b] - target) / slope
    elif below:
        a = max(below)
        estimate = a + (target - scores[a]) / slope
    return max(low, min(high - 1, round(estimate)))


def _estimate(
    tiles: list[Image.Image], fmt: str, level: int, extra: Mapping[str, object], codec: str
) -> float:
    """Encode each tile at ``level``, and return the estimated score of the whole image:
    the tiles' score less the sample's bias (the exact score when the tile is the image)."""
    light = {k: v for k, v in extra.items() if k == "icc_profile"}  # no metadata to score
    mode = tiles[0].mode
    decoded = []
    for tile in tiles:
        with Image.open(io.BytesIO(encode(tile, fmt, level, light, codec))) as out:
            out.load()
            decoded.append(_as_reference(out, mode))
    found = _score.score(_score.mosaic(tiles, mode), _score.mosaic(decoded, mode))
    return found - _score.SAMPLE_BIAS if len(tiles) > 1 else found


def _as_reference(decoded: Image.Image, mode: str) -> Image.Image:
    """The decoded tile in the reference's mode (palette PNGs come back as P)."""
    if decoded.mode == mode:
        return decoded
    if decoded.mode == "P":
        return decoded.convert("RGBA" if mode == "RGBA" else "RGB")
    return decoded.convert(mode) if mode in ("L", "RGB", "RGBA") else decoded
