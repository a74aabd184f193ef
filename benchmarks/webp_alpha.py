"""WebP settings for transparent images: encode CPU, bytes and SSIMULACRA2, per setting.

    .venv/bin/python benchmarks/webp_alpha.py [FOLDER] [--settings 50,3,100 50,2,100 ...]

Every transparent image of the folder (some alpha below 255) is encoded with each setting
``QUALITY,METHOD,ALPHA_QUALITY`` (Pillow's ``quality``, ``method``, ``alpha_quality``), or
``QUALITY,METHOD,spliced`` (the service's way: ``imgcompress_core._webp_alpha``, the
alpha plane lossless in one cheap trial);
the table gives the encode CPU time (the faster of two encodes, this process's CPU
clock), the bytes, and the whole-image SSIMULACRA2 score (``imgcompress_core._score``:
composited on a dark and a light background, the lower counts), summed or averaged over
the images. Needs ``imgcompress[target]``; a whole-image score costs about a second per
megapixel, so a setting takes about a minute on the corpus's five transparent PNGs.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from approaches import is_transparent
from corpus import DEFAULT_FOLDER, Corpus

from imgcompress_core import _score, _webp_alpha

DEFAULT_SETTINGS = ("50,3,100", "50,2,100", "50,1,100", "50,0,100", "47,2,100", "45,2,100")
DEFAULT_SETTINGS += ("43,1,100", "50,3,90", "50,3,80", "50,3,spliced")


def _encode(image: Image.Image, quality: int, method: int, alpha: str) -> bytes:
    """One encode with one setting."""
    if alpha == "spliced":
        spliced = _webp_alpha.encode_rgba(image, quality, method, {})
        if spliced is None:
            raise SystemExit("the spliced alpha needs numpy (imgcompress[fast])")
        return spliced
    out = io.BytesIO()
    image.save(out, "WEBP", quality=quality, method=method, alpha_quality=int(alpha))
    return out.getvalue()


def measure(images: list[Image.Image], quality: int, method: int, alpha: str) -> str:
    """Encode every image with one setting; return its table row."""
    cpu = 0.0
    size = 0
    scores = []
    for image in images:
        best = float("inf")
        for _ in range(2):
            start = time.process_time()
            data = _encode(image, quality, method, alpha)
            best = min(best, time.process_time() - start)
        cpu += best
        size += len(data)
        with Image.open(io.BytesIO(data)) as decoded:
            scores.append(_score.score(image, decoded.convert("RGBA")))
    return (
        f"| q{quality}, method {method}, alpha {alpha} | {1000 * cpu:.0f} | {size:,} "
        f"| {sum(scores) / len(scores):.2f} | {min(scores):.2f} |"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and print the table, a row per setting as it is measured."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS))
    args = parser.parse_args(argv)
    corpus = Corpus.load(args.folder)
    images = []
    for data in corpus.data:
        with Image.open(io.BytesIO(data)) as im:
            if is_transparent(im):
                images.append(im.convert("RGBA"))
    print(f"{len(images)} transparent images from {corpus.folder}")
    print("| setting | encode CPU ms | bytes | SSIMULACRA2 mean | worst |")
    print("| --- | --- | --- | --- | --- |")
    for setting in args.settings:
        quality, method, alpha = setting.split(",")
        print(measure(images, int(quality), int(method), alpha), flush=True)


if __name__ == "__main__":
    main()
