"""``accelerators=False`` (``IMGCOMPRESS_ACCELERATORS=false``): Pillow decodes and encodes
every image. None of the faster codecs (``imgcompress[fast]``) or compiled accelerators is
called, and the results are the Pillow path's; with the default, each of them is used."""

from __future__ import annotations

import io
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from imgcompress_core import _decode, _webp_alpha, compress
from imgcompress_core.compress import CompressOptions, compress_image
from imgcompress_core.settings import Settings
from imgcompress_core.workflow import output_recipe


def _noise(mode: str, seed: int) -> Image.Image:
    rnd = random.Random(seed)
    size = (96, 64)
    smooth = Image.linear_gradient("L").resize(size).convert(mode)
    noise = Image.frombytes(mode, size, rnd.randbytes(size[0] * size[1] * len(mode)))
    return Image.blend(smooth, noise, 0.3)


def _saved(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def _cut_out() -> Image.Image:
    image = _noise("RGBA", 3)
    alpha = Image.new("L", image.size, 0)
    alpha.paste(255, (20, 10, 70, 50))
    image.putalpha(alpha)
    return image


# Each image takes one of the accelerated paths by default.
IMAGES = {
    "jpeg-420": _saved(_noise("RGB", 1), "JPEG", quality=95),  # re-quantised
    "jpeg-444": _saved(_noise("RGB", 2), "JPEG", quality=95, subsampling=0),  # imagecodecs
    "png-rgb": _saved(_noise("RGB", 4), "PNG"),  # libdeflate + the unfilter
    "png-rgba": _saved(_cut_out(), "PNG"),  # the same, then WebP's alpha plane by numpy
}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the calls into each accelerated path, and (as NAME:done) those that gave a
    result rather than leaving the image to Pillow; each still does its work."""
    counted: Counter[str] = Counter()

    def counting(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def counted_call(*args: Any, **kwargs: Any) -> Any:
            counted[name] += 1
            result = function(*args, **kwargs)
            counted[f"{name}:done"] += result is not None
            return result

        return counted_call

    monkeypatch.setattr(
        compress, "jpeg_requantised", counting("requantise", compress.jpeg_requantised)
    )
    monkeypatch.setattr(
        compress, "jpeg_round_trip", counting("jpeg_round_trip", compress.jpeg_round_trip)
    )
    monkeypatch.setattr(_decode, "decode_png", counting("decode_png", _decode.decode_png))
    monkeypatch.setattr(_webp_alpha, "encode_rgba", counting("webp_alpha", _webp_alpha.encode_rgba))
    return counted


def _pixels(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.mode, image.size, image.tobytes()


def test_by_default_every_accelerated_path_is_taken(calls: Counter[str]) -> None:
    for data in IMAGES.values():
        compress_image(data, CompressOptions())
    # Both JPEGs are offered to the re-quantiser; the 4:4:4 one goes to imagecodecs.
    assert calls == {
        "requantise": 2,
        "requantise:done": 1,
        "jpeg_round_trip": 1,
        "jpeg_round_trip:done": 1,
        "decode_png": 2,
        "decode_png:done": 2,
        "webp_alpha": 1,
        "webp_alpha:done": 1,
    }


@pytest.mark.parametrize("name", list(IMAGES))
def test_switched_off_none_is_called(name: str, calls: Counter[str]) -> None:
    result = compress_image(IMAGES[name], CompressOptions(accelerators=False))
    assert result.data
    assert calls == {}


@pytest.mark.parametrize("name", ["jpeg-420", "jpeg-444"])
def test_switched_off_a_jpeg_is_pillows_re_encode(name: str) -> None:
    """Decoded by Pillow and written at quality 50, Huffman-optimised: not the
    re-quantised bytes (which differ for a 4:2:0 JPEG)."""
    data = IMAGES[name]
    with Image.open(io.BytesIO(data)) as image:
        expected = _saved(image, "JPEG", quality=50, optimize=True)
    off = compress_image(data, CompressOptions(accelerators=False))
    assert off.data == expected
    on = compress_image(data, CompressOptions())
    assert (on.data == expected) is (name == "jpeg-444")


@pytest.mark.parametrize("name", ["png-rgb", "png-rgba"])
def test_switched_off_a_png_gives_the_same_pixels(name: str) -> None:
    off = compress_image(IMAGES[name], CompressOptions(accelerators=False))
    on = compress_image(IMAGES[name], CompressOptions())
    assert (off.content_type, off.width, off.height) == (on.content_type, on.width, on.height)
    assert _pixels(off.data) == _pixels(on.data)


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGCOMPRESS_ACCELERATORS", "false")
    assert Settings().accelerators is False


def _encoder_settings(options: CompressOptions) -> str:
    """What the reuse cache's recipe adds to the policy and quality for ``options``."""
    recipe = output_recipe(
        "{}", options.quality, options.jpeg_encoder, options.jpeg_progressive, options.accelerators
    )
    prefix = f"{{}}|quality={options.quality}|"
    assert recipe.startswith(prefix)
    return recipe.removeprefix(prefix)


def test_the_reuse_cache_keys_outputs_by_the_encoder_settings() -> None:
    """What the recipe adds to the policy and quality: the JPEG encoder always (outputs
    stored before it was part of the key are not reused), each setting that changes the
    bytes when it is not the default."""
    assert _encoder_settings(CompressOptions(quality=80)) == "jpeg_encoder=libjpeg-turbo"
    assert _encoder_settings(CompressOptions(accelerators=False)) == (
        "jpeg_encoder=libjpeg-turbo|no_accelerators"
    )
    changed = CompressOptions(
        jpeg_encoder="libjpeg-turbo-robidoux", jpeg_progressive=True, accelerators=False
    )
    assert _encoder_settings(changed) == (
        "jpeg_encoder=libjpeg-turbo-robidoux|jpeg_progressive|no_accelerators"
    )
