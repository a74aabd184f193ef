"""Encode prepared pixels in one format, and search the quality a policy asks for.

Every format has a *ladder*: its settings ordered from the smallest, worst output to
the largest, best one. For JPEG, WebP and AVIF it is the encoder's quality, 1 to 100;
for PNG the palette size (2 to 256 colours, dithered), then lossless. The searches
walk a ladder:

- a fixed quality is one rung;
- ``target_quality``: the lowest rung whose estimated SSIMULACRA2 score reaches the
  target (one that passes it by at most 1.5 points will do): the first try is where the
  codec's typical quality-to-score curve reaches the target, the next ones on the line
  through the scores found (2 or 3 encodes of the sample's tiles in all, at most 6,
  never of the image). The estimate is the score of a sample of the image
  (:mod:`._score`) less the sample's measured bias; the whole image, when it is small;
- ``max_bytes``: from the rung chosen, the highest rung at or below it whose full
  output fits (bisection over full encodes); none fitting raises
  ``max_bytes_unreachable`` naming the cap. Dimensions never change.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from PIL import Image

from . import _score, _webp_alpha
from ._meta import MAX_ICC, Kept, insert_segments
from .errors import CompressionError

__all__ = [
    "CONTENT_TYPES",
    "JPEG_ENCODERS",
    "ROBIDOUX",
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
# libjpeg-turbo through Pillow, with libjpeg's tables or N. Robidoux's; jpegli through
# pyjpegli (imgcompress[jpegli]), for RGB.
JPEG_ENCODERS = ("libjpeg-turbo", "libjpeg-turbo-robidoux", "jpegli")
# The quantisation table N. Robidoux tuned for ImageMagick (MozJPEG's default), for every
# component, in row order; Pillow scales it by quality as libjpeg scales its own, and
# clamps it to 255. On the corpus: 5 % fewer bytes than libjpeg's tables at the same
# SSIMULACRA2 near quality 50, 8 % near 80 (benchmarks/RESULTS.md, section 8).
ROBIDOUX = (
    *(16, 16, 16, 18, 25, 37, 56, 85),
    *(16, 17, 20, 27, 34, 40, 53, 75),
    *(16, 20, 24, 31, 43, 62, 91, 135),
    *(18, 27, 31, 40, 53, 74, 106, 156),
    *(25, 34, 43, 53, 69, 94, 131, 189),
    *(37, 40, 62, 74, 94, 124, 169, 238),
    *(56, 53, 91, 106, 131, 169, 226, 311),
    *(85, 75, 135, 156, 189, 238, 311, 418),
)
_JPEGLI_EXTRA = frozenset({"icc_profile", "exif", "xmp"})  # what _jpegli can write
_WEBP_METHOD = 3  # libwebp's effort 3 of 6: a fifth faster than its default 4
_PALETTES = (2, 4, 8, 16, 32, 64, 128, 256)
LOSSLESS = 0  # the PNG rung above every palette
_QUALITIES = tuple(range(1, 101))
_CLOSE_ENOUGH = 2  # stop the target search when the bracket is this many rungs wide
_SLACK = 1.5  # or when a rung reaches the target by at most this many points
_AIM = 0.5  # aim this far above the target, to land between it and _SLACK
_MAX_TRIES = 6  # sample encodes per target search, at most
_MIN_SLOPE = 0.05  # score points per quality step, at least, when extrapolating
# Each codec's typical curve: the median whole-image score of the corpus images (1200 px)
# at each of these qualities (benchmarks/policy.py --only curves). The search starts where
# the curve reaches the target.
_CURVE_QUALITIES = (15, 25, 35, 45, 55, 62, 70, 78, 85, 92, 97)
_CURVES: Mapping[str, tuple[float, ...]] = {
    "jpeg": (13.9, 41.4, 54.4, 62.0, 68.2, 71.6, 75.6, 80.5, 84.3, 88.8, 92.4),
    "webp": (38.0, 46.2, 54.3, 59.5, 63.3, 65.6, 68.9, 73.0, 78.8, 85.0, 88.7),
    "avif": (26.7, 42.2, 56.9, 67.4, 74.9, 78.7, 82.0, 84.7, 86.9, 89.3, 91.0),
}


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
    progressive: bool = False  # JPEGs by libjpeg-turbo written progressive
    accelerated: bool = True  # the faster codecs when installed; False: Pillow writes all


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
    *,
    smallest: bool = True,
    jpeg_encoder: str = "libjpeg-turbo",
    progressive: bool = False,
    accelerated: bool = True,
) -> bytes:
    """Encode ``image`` as ``fmt`` at rung ``level`` with ``extra`` save parameters (ICC
    profile, metadata); raise CompressionError when the encoder fails. ``smallest=False``
    skips what only makes the file smaller, not the pixels different (JPEG's Huffman
    optimisation and ``progressive`` scans): for encodes that are only decoded and scored.

    With ``jpeg_encoder="jpegli"``, an RGB JPEG is written by jpegli; Pillow's
    libjpeg-turbo writes every other mode (grey, CMYK) and format. With
    ``"libjpeg-turbo-robidoux"``, libjpeg-turbo quantises every JPEG by :data:`ROBIDOUX`.
    ``accelerated=False``: Pillow's libwebp compresses a WebP's alpha plane too.
    """
    jpegli = fmt == "jpeg" and jpeg_encoder == "jpegli" and image.mode == "RGB"
    if jpegli and _JPEGLI_EXTRA.issuperset(extra):
        return _jpegli(image, level, extra)
    params: dict[str, object] = dict(extra)
    if fmt == "jpeg":
        params.update(quality=level, optimize=smallest, progressive=progressive and smallest)
        if jpeg_encoder == "libjpeg-turbo-robidoux":  # one table per component that needs it
            params["qtables"] = [list(ROBIDOUX)] * min(len(image.getbands()), 2)
    elif fmt == "webp":
        params.update(quality=level, method=_WEBP_METHOD)
    elif fmt == "avif":  # one thread: the pool already runs one image per CPU
        params.update(quality=level, speed=8, max_threads=1)
    elif fmt == "png":
        params.update(optimize=False, compress_level=9)
        if level != LOSSLESS:
            method = Image.Quantize.FASTOCTREE if image.mode == "RGBA" else None
            image = image.quantize(level, method=method, dither=Image.Dither.FLOYDSTEINBERG)
    buffer = io.BytesIO()
    try:
        if (
            fmt == "webp"
            and accelerated
            and (cheaper := _webp_alpha.encode_rgba(image, level, _WEBP_METHOD, extra))
        ):
            return cheaper
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
    rungs = ladder(fmt)
    notes: list[str] = []
    score = None
    if want.target is None:
        index = rungs.index(_rung(fmt, want.quality))
    else:
        index, score = _search_target(image, fmt, rungs, want.target, extra, want)
        if score < want.target:
            notes.append(
                f"target_quality {want.target:g} was not reached even at the highest "
                f"{fmt} quality (score {score:.1f})"
            )

    def full(level: int) -> bytes:
        return encode(
            image,
            fmt,
            level,
            extra,
            jpeg_encoder=want.jpeg_encoder,
            progressive=want.progressive,
            accelerated=want.accelerated,
        )

    data = full(rungs[index])
    if want.max_bytes is not None and len(data) > want.max_bytes:
        index, data = _fit(full, fmt, rungs, index, want.max_bytes, len(data))
        if score is not None and want.target is not None:
            score = _Sample(image, fmt, want.target, want).estimate(rungs[index], extra)
            notes.append(f"max_bytes lowered the quality below target_quality (score {score:.1f})")
    return Encoded(data, fmt, rungs[index], score, tuple(notes))


def _fit(
    full: Callable[[int], bytes],
    fmt: str,
    rungs: tuple[int, ...],
    above: int,
    cap: int,
    size_above: int,
) -> tuple[int, bytes]:
    """The highest rung below ``above`` whose output (``full(rung)``) fits ``cap`` bytes,
    and the output."""
    lowest = full(rungs[0])
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
        data = full(rungs[middle])
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
    want: Search,
) -> tuple[int, float]:
    """The lowest rung whose sample scores at least ``target`` (a rung scoring at most
    ``_SLACK`` above it will do), and its score; the top rung and its lower score when
    none reaches the target."""
    sample = _Sample(image, fmt, target, want)
    scores: dict[int, float] = {}

    def tried(index: int) -> float:
        if index not in scores:
            scores[index] = sample.estimate(rungs[index], extra)
        return scores[index]

    low, high = 0, len(rungs) - 1  # the answer is in [low, high]
    guess = len(rungs) - 2 if fmt == "png" else int(_quality_for(fmt, target + _AIM)) - 1
    for _ in range(_MAX_TRIES):
        if tried(guess) >= target:
            high = guess
        else:
            low = guess + 1
        if fmt == "png":
            if high == low:
                break
            guess = (low + high) // 2
            continue
        if high - low <= _CLOSE_ENOUGH or scores.get(high, 1000.0) - target <= _SLACK:
            break
        guess = _next_guess(fmt, scores, low, high, target)
    return high, tried(high)


def _next_guess(fmt: str, scores: Mapping[int, float], low: int, high: int, target: float) -> int:
    """The next rung to try in [low, high): on the straight line through the two nearest
    rungs tried (on each side of the target, or else on the one side); after a single
    rung, on the codec's typical curve shifted along the qualities to go through it."""
    aim = target + _AIM
    below = sorted(i for i in scores if i < low)
    above = sorted(i for i in scores if i >= high)
    if below and above:
        a, b = below[-1], above[0]
    elif len(below) >= 2:
        a, b = below[-2], below[-1]
    elif len(above) >= 2:
        a, b = above[0], above[1]
    else:
        nearest = (below or above)[0]
        shift = nearest + 1 - _quality_for(fmt, scores[nearest], exact=True)
        return max(low, min(high - 1, math.ceil(_quality_for(fmt, aim, exact=True) + shift) - 1))
    slope = max((scores[b] - scores[a]) / (b - a), _MIN_SLOPE)
    return max(low, min(high - 1, math.ceil(a + (aim - scores[a]) / slope)))


def _quality_for(fmt: str, score: float, exact: bool = False) -> float:
    """The quality at which the codec's typical curve reaches ``score`` (rounded up to a
    whole quality unless ``exact``)."""
    curve = tuple(zip(_CURVE_QUALITIES, _CURVES[fmt], strict=True))
    found: float = curve[-1][0]
    for (q0, s0), (q1, s1) in itertools.pairwise(curve):
        if score <= s1:
            found = q0 if score <= s0 else q0 + (q1 - q0) * (score - s0) / (s1 - s0)
            break
    return found if exact else math.ceil(found)


class _Sample:
    """What a target search scores: the image's tiles, their mosaic prepared as the
    reference, and the bias of the sample's score for the codec near the target."""

    def __init__(self, image: Image.Image, fmt: str, target: float, want: Search) -> None:
        self.fmt = fmt
        self.want = want  # the encoder choices
        self.tiles = _score.tiles(image, fmt)
        self.mode = self.tiles[0].mode
        self.reference = _score.reference(_score.mosaic(self.tiles, self.mode))
        self.bias = _score.sample_bias(fmt, target) if len(self.tiles) > 1 else 0.0

    def estimate(self, level: int, extra: Mapping[str, object]) -> float:
        """Encode each tile at ``level``, and return the estimated score of the whole
        image: the tiles' score less the sample's bias (exact when the tile is the image)."""
        light = {k: v for k, v in extra.items() if k == "icc_profile"}  # no metadata to score
        decoded = []
        for tile in self.tiles:
            encoded = encode(
                tile,
                self.fmt,
                level,
                light,
                smallest=False,
                jpeg_encoder=self.want.jpeg_encoder,
                accelerated=self.want.accelerated,
            )
            with Image.open(io.BytesIO(encoded)) as out:
                out.load()
                decoded.append(_as_reference(out, self.mode))
        return self.reference.score(_score.mosaic(decoded, self.mode)) - self.bias


def _as_reference(decoded: Image.Image, mode: str) -> Image.Image:
    """The decoded tile in the reference's mode (palette PNGs come back as P)."""
    if decoded.mode == mode:
        return decoded
    if decoded.mode == "P":
        return decoded.convert("RGBA" if mode == "RGBA" else "RGB")
    return decoded.convert(mode) if mode in ("L", "RGB", "RGBA") else decoded
