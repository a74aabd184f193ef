"""SSIMULACRA2 in vectorised numpy and scipy, with the original's side computed once.

SSIMULACRA2 (libjxl's ``tools/ssimulacra2``) compares two images in the XYB colour space
at six scales (each half the last, averaged in linear RGB). At each scale and in each of
the three channels it measures, through Gaussian-blurred means and variances (sigma
1.5), a structural dissimilarity map (one minus SSIM, without SSIM's luminance
normalisation) and an edge map (how much sharper or smoother the candidate's local detail
is than the original's: ringing and blocking one way, blurring the other). Each map is
summarised by its mean and its 4-norm; 108 weighted sums of those make a distance that a
fixed polynomial turns into a score (100: identical, 90: visually lossless, 70: high
quality, 50: medium).

A quality search scores many candidates against one original, so :class:`Reference`
keeps the original's XYB pyramid with its blurred means and variances, and each
:meth:`Reference.score` computes only the candidate's side and the cross term: three
blurred planes per channel and scale, in float32, without files. The blur is separable:
along rows by small matrix products over overlapping blocks (zero beyond the left and
right edges), down columns by one sparse band-matrix product over every plane at once (mirrored
at the top and bottom): the borders of the ``ssimulacra2`` package, which the tests use as
the oracle. With every channel computed and in float64, this gave that package's scores to
1e-11 while it was written; in float32 and without the negligible channels (``_NEGLIGIBLE``)
the two agree to within 0.03 points on corpus images.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.stride_tricks import as_strided
from PIL import Image
from scipy import sparse

if TYPE_CHECKING:
    from numpy.typing import NDArray

    Planes = NDArray[np.float32]

__all__ = ["Reference"]

_SIGMA = 1.5
_TRUNCATE = 3.33  # the kernel's radius: 5 pixels at sigma 1.5
_SCALES = 6
_C2 = 0.0009
_CHANNELS = 3
# A channel whose weights at a scale add up to less than this is not computed there: on
# the finest scale only Y counts (X and B weigh under 0.002 in all), on the next X and Y.
# The features left out are at most about 1, so they move a score by a few hundredths.
_NEGLIGIBLE = 0.01

# Opsin absorbance: linear RGB to the LMS-like mix that XYB takes the cube root of.
_OPSIN = np.array(
    [
        [0.30, 0.622, 0.078],
        [0.23, 0.692, 0.078],
        [0.24342268924547819, 0.20476744424496821, 0.55180986151],
    ],
    dtype=np.float64,
)
_OPSIN[2, 2] = 1.0 - _OPSIN[2, 0] - _OPSIN[2, 1]
_OPSIN32 = _OPSIN.astype(np.float32)
_BIAS = 0.0037930732552754493
_CBRT_BIAS = float(np.cbrt(_BIAS))

# The weight of each feature, in the order channel (X, Y, B), scale (finest first),
# norm (mean, 4-norm), kind (SSIM, ringing, blurring). The metric's published constants.
_WEIGHTS = np.array(
    [
        # X
        0.0,
        0.0007376606707406586,
        0.0,
        0.0,
        0.0007793481682867309,
        0.0,
        0.0,
        0.0004371155730107379,
        0.0,
        1.1041726426657346,
        0.00066284834129271,
        0.00015231632783718752,
        0.0,
        0.0016406437456599754,
        0.0,
        1.8422455520539298,
        11.441172603757666,
        0.0,
        0.0007989109436015163,
        0.000176816438078653,
        0.0,
        1.8787594979546387,
        10.94906990605142,
        0.0,
        0.0007289346991508072,
        0.9677937080626833,
        0.0,
        0.00014003424285435884,
        0.9981766977854967,
        0.00031949755934435053,
        0.0004550992113792063,
        0.0,
        0.0,
        0.0013648766163243398,
        0.0,
        0.0,
        # Y
        0.0,
        0.0,
        0.0,
        7.466890328078848,
        0.0,
        17.445833984131262,
        0.0006235601634041466,
        0.0,
        0.0,
        6.683678146179332,
        0.00037724407979611296,
        1.027889937768264,
        225.20515300849274,
        0.0,
        0.0,
        19.213238186143016,
        0.0011401524586618361,
        0.001237755635509985,
        176.39317598450694,
        0.0,
        0.0,
        24.43300999870476,
        0.28520802612117757,
        0.0004485436923833408,
        0.0,
        0.0,
        0.0,
        34.77906344483772,
        44.835625328877896,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        # B
        0.0,
        0.0008680556573291698,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0005313191874358747,
        0.0,
        0.00016533814161379112,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        0.0004179171803251336,
        0.0017290828234722833,
        0.0,
        0.0020827005846636437,
        0.0,
        0.0,
        8.826982764996862,
        23.19243343998926,
        0.0,
        95.1080498811086,
        0.9863978034400682,
        0.9834382792465353,
        0.0012286405048278493,
        171.2667255897307,
        0.9807858872435379,
        0.0,
        0.0,
        0.0,
        0.0005130064588990679,
        0.0,
        0.00010854057858411537,
    ],
    dtype=np.float64,
).reshape(_CHANNELS, _SCALES, 2, 3)


def _srgb_table() -> NDArray[np.float32]:
    """The linear value of each 8-bit sRGB level."""
    level = np.arange(256, dtype=np.float64) / 255.0
    linear = np.where(level <= 0.04045, level / 12.92, ((level + 0.055) / 1.055) ** 2.4)
    return linear.astype(np.float32)


_LINEAR = _srgb_table()


def _linear_rgb(image: Image.Image, shade: int | None) -> Planes:
    """The image in linear RGB, rows by channels by columns; composited onto the grey
    ``shade`` (0-255) when it has alpha."""
    if shade is None:
        image = image.convert("RGB")
    else:
        rgba = image.convert("RGBA")
        image = Image.new("RGB", image.size, (shade, shade, shade))
        image.paste(rgba, mask=rgba.getchannel("A"))
    return np.stack([_LINEAR[np.asarray(band)] for band in image.split()], axis=1)


def _xyb(linear: Planes) -> Planes:
    """Linear RGB to SSIMULACRA2's positive XYB, in the same layout."""
    mixed = np.matmul(_OPSIN32, linear)
    mixed += _BIAS
    np.maximum(mixed, 0.0, out=mixed)
    np.cbrt(mixed, out=mixed)
    mixed -= _CBRT_BIAS
    out: Planes = np.empty_like(mixed)
    out[:, 0] = (mixed[:, 0] - mixed[:, 1]) * 7.0 + 0.42  # X: 0.5 * (L - M), times 14
    out[:, 1] = (mixed[:, 0] + mixed[:, 1]) * 0.5 + 0.01  # Y
    out[:, 2] = mixed[:, 2] - (mixed[:, 0] + mixed[:, 1]) * 0.5 + 0.55  # B - Y
    return out


def _half(linear: Planes) -> Planes:
    """The next scale: 2 x 2 means (an odd last row or column is averaged alone, as if
    repeated)."""
    height, _, width = linear.shape
    if height % 2 or width % 2:
        linear = np.pad(linear, ((0, height % 2), (0, 0), (0, width % 2)), mode="edge")
    pairs = linear[0::2] + linear[1::2]  # rows first: whole rows added at once
    pairs = pairs[:, :, 0::2] + pairs[:, :, 1::2]
    pairs *= 0.25
    return pairs


def _kernel() -> NDArray[np.float64]:
    """The Gaussian's taps (sigma 1.5, radius 5), summing to one."""
    radius = int(_TRUNCATE * _SIGMA + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / _SIGMA) ** 2)
    normalised: NDArray[np.float64] = kernel / kernel.sum()
    return normalised


_KERNEL = _kernel()


@lru_cache(maxsize=16)
def _column_blur(height: int) -> sparse.csr_array:
    """The vertical Gaussian as a band matrix, mirrored at the first and last rows."""
    radius = _KERNEL.size // 2
    offsets = np.arange(-radius, radius + 1)
    rows = np.repeat(np.arange(height), offsets.size)
    columns = (rows + np.tile(offsets, height)) % (2 * height)  # mirror: -1 is 0, h is h-1
    columns = np.where(columns >= height, 2 * height - 1 - columns, columns)
    weights = np.tile(_KERNEL, height)
    band = sparse.coo_array((weights, (rows, columns)), shape=(height, height))
    return sparse.csr_array(band, dtype=np.float32)  # duplicates (mirrored taps) are summed


_BLOCK = 16  # columns per block of the row blur


@lru_cache(maxsize=1)
def _row_block() -> Planes:
    """The row blur of one block: ``_BLOCK`` outputs from ``_BLOCK`` + 10 inputs."""
    radius = _KERNEL.size // 2
    block = np.zeros((_BLOCK + 2 * radius, _BLOCK), dtype=np.float32)
    for column in range(_BLOCK):
        block[column : column + _KERNEL.size, column] = _KERNEL
    return block


def _row_blur(planes: Planes) -> Planes:
    """The horizontal Gaussian (zero beyond the first and last columns): every row cut in
    overlapping blocks, each block multiplied by one small matrix (a BLAS product, about
    twice as fast as :func:`scipy.ndimage.correlate1d` here)."""
    height, count, width = planes.shape
    radius = _KERNEL.size // 2
    blocks = -(-width // _BLOCK)
    padded = np.zeros((height * count, blocks * _BLOCK + 2 * radius), dtype=np.float32)
    padded[:, radius : radius + width] = planes.reshape(height * count, width)
    item = padded.itemsize
    windows = as_strided(
        padded,
        shape=(padded.shape[0], blocks, _BLOCK + 2 * radius),
        strides=(padded.strides[0], _BLOCK * item, item),
        writeable=False,
    )
    rows: Planes = np.matmul(windows, _row_block()).reshape(padded.shape[0], -1)
    return rows[:, :width].reshape(planes.shape)


def _blur(planes: Planes) -> Planes:
    """Gaussian blur (sigma 1.5) of every plane of a rows x planes x columns array."""
    rows = _row_blur(planes)
    height = planes.shape[0]
    flat = rows.reshape(height, -1)
    blurred: Any = _column_blur(height) @ flat
    return np.asarray(blurred, dtype=np.float32).reshape(planes.shape)


def _sums(values: Planes) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per channel: the sum of a map, and the sum of its fourth power (``values`` is
    overwritten)."""
    total = values.sum(axis=0).sum(axis=-1, dtype=np.float64)  # rows first: contiguous adds
    np.multiply(values, values, out=values)
    np.multiply(values, values, out=values)
    return total, values.sum(axis=0).sum(axis=-1, dtype=np.float64)


def _weights(scales: int) -> NDArray[np.float64]:
    """The weights for an image of ``scales`` scales, as (channel, scale, norm, kind).

    Like libjxl, the table is read in order, so an image too small for six scales uses
    its first weights."""
    return _WEIGHTS.reshape(-1)[: _CHANNELS * scales * 6].reshape(_CHANNELS, scales, 2, 3)


def _channels(scales: int) -> list[list[int]]:
    """Per scale, the channels whose features weigh enough to compute."""
    weights = _weights(scales)
    return [
        [c for c in range(_CHANNELS) if weights[c, scale].sum() >= _NEGLIGIBLE]
        for scale in range(scales)
    ]


def _count_scales(width: int, height: int) -> int:
    """How many scales an image of this size has (each at least 8 x 8)."""
    count = 0
    while count < _SCALES and min(width, height) >= 8:
        count += 1
        width, height = (width + 1) // 2, (height + 1) // 2
    return count


class _Scale:
    """One scale of the original: its XYB planes, blurred mean, variance and detail, in
    the channels that count at this scale."""

    __slots__ = ("channels", "inverse_detail", "mean", "variance", "xyb")

    def __init__(self, xyb: Planes, channels: list[int]) -> None:
        self.channels = channels
        xyb = xyb[:, channels]
        self.xyb = xyb
        if not channels:
            return
        used = len(channels)
        blurred = _blur(np.concatenate([xyb, xyb * xyb], axis=1))
        self.mean = blurred[:, :used]
        # sigma1^2 + C2, the original's half of SSIM's denominator
        self.variance = blurred[:, used:] - self.mean * self.mean + _C2
        self.inverse_detail = 1.0 / (1.0 + np.abs(xyb - self.mean))

    def features(self, xyb: Planes) -> NDArray[np.float64]:
        """The (channel, norm, kind) summaries of a candidate at this scale (zero in the
        channels that do not count)."""
        if not self.channels:
            return np.zeros((_CHANNELS, 2, 3))
        xyb = xyb[:, self.channels]
        height, used, width = xyb.shape
        stack = np.empty((height, 3 * used, width), dtype=np.float32)
        stack[:, :used] = xyb
        np.multiply(xyb, xyb, out=stack[:, used : 2 * used])
        np.multiply(xyb, self.xyb, out=stack[:, 2 * used :])
        blurred = _blur(stack)
        mean = blurred[:, :used]
        denominator = blurred[:, used : 2 * used]  # E[x2^2], then the denominator
        numerator = blurred[:, 2 * used :]  # E[x1 x2], then the numerator
        work = mean * mean
        denominator -= work
        denominator += self.variance  # sigma1^2 + sigma2^2 + C2
        np.multiply(mean, self.mean, out=work)
        numerator -= work
        numerator *= 2.0
        numerator += _C2  # 2 sigma12 + C2
        np.subtract(self.mean, mean, out=work)
        np.multiply(work, work, out=work)
        np.subtract(1.0, work, out=work)  # 1 - (mu1 - mu2)^2
        work *= numerator
        work /= denominator
        np.subtract(1.0, work, out=work)
        np.maximum(work, 0.0, out=work)  # the SSIM distance map
        count = height * width
        found = np.zeros((_CHANNELS, 2, 3))
        ssim, ssim4 = _sums(work)
        # Edges: the candidate's local detail against the original's, less one; above
        # zero is ringing (detail added), below is blurring (detail lost).
        edge = numerator
        np.subtract(xyb, mean, out=edge)
        np.abs(edge, out=edge)
        edge += 1.0
        edge *= self.inverse_detail
        edge -= 1.0
        signed, fourth = _sums(edge.copy())
        np.maximum(edge, 0.0, out=edge)
        ringing, ringing4 = _sums(edge)
        sums = np.array([ssim, ringing, ringing - signed], dtype=np.float64)
        sums4 = np.array([ssim4, ringing4, fourth - ringing4], dtype=np.float64)
        found[self.channels, 0] = (sums / count).T
        found[self.channels, 1] = np.sqrt(np.sqrt(np.maximum(sums4, 0.0) / count)).T
        return found


class _Side:
    """The original on one background: the pyramid of :class:`_Scale`."""

    def __init__(self, image: Image.Image, shade: int | None) -> None:
        self.shade = shade
        self.scales: list[_Scale] = []
        channels = _channels(_count_scales(*image.size))
        self.weights = _weights(len(channels))
        linear = _linear_rgb(image, shade)
        for level, needed in enumerate(channels):
            self.scales.append(_Scale(_xyb(linear), needed))
            if level < len(channels) - 1:
                linear = _half(linear)

    def score(self, candidate: Image.Image) -> float:
        """The score of ``candidate`` (the original's size) on this background."""
        linear = _linear_rgb(candidate, self.shade)
        found = []
        for level, scale in enumerate(self.scales):
            found.append(scale.features(_xyb(linear)) if scale.channels else np.zeros((3, 2, 3)))
            if level < len(self.scales) - 1:
                linear = _half(linear)
        return _to_score(np.stack(found, axis=1), self.weights)


def _to_score(features: NDArray[np.float64], weights: NDArray[np.float64]) -> float:
    """The weighted distance of (channel, scale, norm, kind) features, as a score."""
    distance = float(np.sum(weights * np.abs(features))) * 0.9562382616834844
    distance = (
        2.326765642916932 * distance
        - 0.020884521182843837 * distance**2
        + 6.248496625763138e-05 * distance**3
    )
    return 100.0 - 10.0 * distance**0.6276336467831387 if distance > 0 else 100.0


class Reference:
    """An original, prepared once to score many candidates against it."""

    def __init__(self, image: Image.Image) -> None:
        transparent = image.mode in ("RGBA", "LA", "PA") or (
            image.mode == "P" and "transparency" in image.info
        )
        # Alpha is scored as the metric's authors do: on a dark and a light background,
        # the lower score counting.
        shades: tuple[int | None, ...] = (26, 230) if transparent else (None,)  # 0.1, 0.9
        self.size = image.size
        self._sides = [_Side(image, shade) for shade in shades]

    def score(self, candidate: Image.Image) -> float:
        """Return the SSIMULACRA2 score of ``candidate`` (the original's size)."""
        if candidate.size != self.size:
            raise ValueError(f"candidate size {candidate.size}, original size {self.size}")
        return min(side.score(candidate) for side in self._sides)
