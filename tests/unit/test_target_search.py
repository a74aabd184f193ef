"""The target_quality search (``_encode._search_target``) over known quality-to-score curves.

The sample is replaced by a stand-in whose score at each quality is given, so the test
checks the search's logic (what it returns, that it stops), not the scorer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping

import pytest

from imgcompress_core import _encode

Curve = Callable[[int], float]


class Stub:
    """A sample whose estimate follows a curve, counting the encodes."""

    curve: Curve = staticmethod(lambda quality: float(quality))
    tried: list[int] = []  # noqa: RUF012 - reset by the fixture

    def __init__(self, image: object, fmt: str, target: float, want: _encode.Search) -> None:
        pass

    def estimate(self, level: int, extra: Mapping[str, object]) -> float:
        Stub.tried.append(level)
        return Stub.curve(level)


@pytest.fixture(autouse=True)
def stub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_encode, "_Sample", Stub)
    Stub.tried = []


def shifted(fmt: str, by: float) -> Curve:
    """The codec's typical curve moved ``by`` qualities (an easier or harder image)."""
    qualities, scores = _encode._CURVE_QUALITIES, _encode._CURVES[fmt]

    points = list(zip(qualities, scores, strict=True))

    def curve(quality: int) -> float:
        q = quality - by
        if q <= qualities[0]:
            return scores[0] * max(q, 1) / qualities[0]
        for (q0, s0), (q1, s1) in itertools.pairwise(points):
            if q <= q1:
                return s0 + (s1 - s0) * (q - q0) / (q1 - q0)
        return scores[-1] + (q - qualities[-1]) * 0.3

    return curve


def search(fmt: str, target: float) -> tuple[int, float]:
    rungs = _encode.ladder(fmt)
    want = _encode.Search(50, target)
    index, score = _encode._search_target(None, fmt, rungs, target, {}, want)  # type: ignore[arg-type]
    return rungs[index], score


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "avif"])
@pytest.mark.parametrize("by", [-20, -8, 0, 5, 15])
@pytest.mark.parametrize("target", [40, 70, 85])
def test_the_search_returns_a_quality_that_reaches_the_target_closely(
    fmt: str, by: float, target: float
) -> None:
    Stub.curve = shifted(fmt, by)
    quality, score = search(fmt, target)
    if Stub.curve(100) < target:
        assert quality == 100
        return
    assert score == Stub.curve(quality) >= target
    # No waste: the score is at most _SLACK above the target, or the quality below fails
    # (or lies within the _CLOSE_ENOUGH steps the search may leave open).
    below = quality - 1 - _encode._CLOSE_ENOUGH
    assert score - target <= _encode._SLACK or below < 1 or Stub.curve(below) < target
    assert len(set(Stub.tried)) <= _encode._MAX_TRIES + 1


def test_an_unreachable_target_ends_at_the_top_quality() -> None:
    Stub.curve = lambda quality: 50 + quality * 0.2  # 70 at quality 100, never 80
    assert search("webp", 80) == (100, 70.0)


def test_png_bisects_its_palettes() -> None:
    # 2 colours score 60, 4 score 70, 8 score 80, 16 score 90...; lossless (0) 99.
    Stub.curve = lambda level: 99.0 if level == 0 else 40.0 + 10 * level.bit_length()
    assert search("png", 85) == (16, 90.0)
