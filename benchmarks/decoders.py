"""Decoders and per-image checks: CPU per image of each way of doing the same work.

    .venv/bin/python benchmarks/decoders.py [FOLDER] [--rounds 4] [--score]

One thread, this process's CPU clock, the corpus's files read into memory first; each
variant runs over all its files once per round, the variants alternating within a round,
and the table gives the mean CPU ms per image over the rounds. Rows:

- PNG decode: Pillow against libspng (``imagecodecs.spng_decode``, then
  ``Image.fromarray``) and against libdeflate with the compiled unfilter
  (``_fast.decode_png``, which takes that path for every corpus PNG when the accelerator
  is built), and whether the pixels are the same;
- JPEG decode, and decode + encode at q50 (Huffman-optimised, 4:2:0): Pillow against
  ``imagecodecs``' libjpeg-turbo on arrays (no Pillow image at all); Pillow decoding into
  YCbCr (``draft("YCbCr")``) and encoding from it, which skips both colour conversions;
- the JPEG scan count that runs before every JPEG decode (``_jpeg.count_scans``), and the
  same walk with the marker pattern it had before (``\\xff+`` first);
- over the JPEGs the compiled accelerator takes (4:2:0 or grey, tables at least as fine
  as q50's): imagecodecs' decode + encode against re-quantising the coefficients
  (``_fast.jpeg_requantised``), with the bytes of both and, with ``--score``, the mean
  SSIMULACRA2 of both against the source's pixels (``imgcompress[target]``).

Needs ``imgcompress[fast]`` (imagecodecs) and, for the last rows, the accelerator (built at
install time where a C compiler and libjpeg's headers are).
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import imagecodecs
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import DEFAULT_FOLDER

from imgcompress_core import _fast
from imgcompress_core._fast import jpeg_requantised, requantiser_available
from imgcompress_core._jpeg import count_scans

_OLD_MARKER = re.compile(rb"\xff+([^\x00\xff])")


def old_count_scans(data: bytes) -> int:
    """The scan count with the marker pattern of before (``\\xff+`` first), lengths skipped."""
    scans, pos = 0, 2
    while (found := _OLD_MARKER.search(data, pos)) is not None:
        marker, pos = found.group(1)[0], found.end()
        if marker == 0xDA:
            scans += 1
        if 0xC0 <= marker <= 0xFE and not 0xD0 <= marker <= 0xD9:
            pos += int.from_bytes(data[pos : pos + 2], "big")
        if marker == 0xD9:
            break
    return scans


def pillow_decode(data: bytes) -> Image.Image:
    """Pillow's decode, as ``_decode`` runs it."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def spng_decode(data: bytes) -> Image.Image:
    """libspng's decode into a Pillow image, as ``_fast`` runs it."""
    return Image.fromarray(imagecodecs.spng_decode(data))


def fast_png(data: bytes) -> Image.Image:
    """The service's PNG decode: libdeflate and the compiled unfilter where built."""
    image = _fast.decode_png(data)
    if image is None:
        raise SystemExit("imgcompress_core._fast took no PNG: is imgcompress[fast] installed?")
    return image


def pillow_jpeg(image: Image.Image) -> bytes:
    """Pillow's JPEG at q50, as the default policy writes it."""
    out = io.BytesIO()
    image.save(out, "JPEG", quality=50, optimize=True, subsampling=2)
    return out.getvalue()


def ycbcr_round_trip(data: bytes) -> bytes:
    """Decode into YCbCr and encode from it: no colour conversion either way."""
    image = Image.open(io.BytesIO(data))
    image.draft("YCbCr", image.size)
    image.load()
    return pillow_jpeg(image)


def arrays_round_trip(data: bytes) -> bytes:
    """libjpeg-turbo through imagecodecs, on arrays, with no Pillow image."""
    pixels = imagecodecs.jpeg8_decode(data)
    return bytes(imagecodecs.jpeg8_encode(pixels, level=50, optimize=True, subsampling="420"))


def timed(rounds: int, files: list[bytes], variants: dict[str, Callable[[bytes], object]]) -> None:
    """Print mean CPU ms per image of each variant, the variants alternating each round."""
    spent = dict.fromkeys(variants, 0.0)
    for _ in range(rounds):
        for name, variant in variants.items():
            started = time.process_time()
            for data in files:
                variant(data)
            spent[name] += time.process_time() - started
    for name, seconds in spent.items():
        print(f"| {name} | {len(files)} | {1000 * seconds / rounds / len(files):.2f} |")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the comparisons and print one Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--score", action="store_true", help="SSIMULACRA2 of re-quantising")
    args = parser.parse_args(argv)
    pngs = [path.read_bytes() for path in sorted(args.folder.glob("*.png"))]
    jpegs = [path.read_bytes() for path in sorted(args.folder.glob("*.jp*g"))]
    same = sum(pillow_decode(d).tobytes() == spng_decode(d).tobytes() for d in pngs)
    same_unfiltered = sum(pillow_decode(d).tobytes() == fast_png(d).tobytes() for d in pngs)
    same_jpeg = sum(
        pillow_decode(d).tobytes() == imagecodecs.jpeg8_decode(d).tobytes() for d in jpegs
    )
    print(f"pixels equal: libspng {same} of {len(pngs)} PNGs, ", end="")
    print(f"libdeflate + unfilter {same_unfiltered} of {len(pngs)}, ", end="")
    print(f"imagecodecs' libjpeg-turbo {same_jpeg} of {len(jpegs)} JPEGs")
    print(f"Pillow {Image.__version__}, imagecodecs {imagecodecs.__version__}\n")
    print("| variant | files | CPU ms per image |\n| --- | --- | --- |")
    timed(
        args.rounds,
        pngs,
        {
            "PNG decode, Pillow": pillow_decode,
            "PNG decode, libspng": spng_decode,
            "PNG decode, libdeflate + compiled unfilter": fast_png,
        },
    )
    timed(
        args.rounds,
        jpegs,
        {
            "JPEG decode, Pillow": pillow_decode,
            "JPEG decode, imagecodecs (array)": imagecodecs.jpeg8_decode,
            "JPEG decode + q50 encode, Pillow": lambda d: pillow_jpeg(pillow_decode(d)),
            "JPEG decode + q50 encode, Pillow in YCbCr": ycbcr_round_trip,
            "JPEG decode + q50 encode, imagecodecs (arrays)": arrays_round_trip,
            "JPEG scan count (`count_scans`)": lambda d: count_scans(d, 100),
            "JPEG scan count, the pattern before": old_count_scans,
        },
    )
    if not requantiser_available():
        print("\n(the compiled accelerator is not built here: no re-quantising rows)")
        return
    taken = [d for d in jpegs if jpeg_requantised(d, 50) is not None]
    timed(
        args.rounds,
        taken,
        {
            "JPEG q50, decode + encode, imagecodecs (arrays), the accelerator's JPEGs": (
                arrays_round_trip
            ),
            "JPEG q50, coefficients re-quantised (the accelerator)": lambda d: jpeg_requantised(
                d, 50
            ),
        },
    )
    pixels = sum(len(arrays_round_trip(d)) for d in taken)
    coefficients = sum(len(jpeg_requantised(d, 50) or b"") for d in taken)
    print(
        f"\nbytes over those {len(taken)} JPEGs: decode + encode {pixels:,}, "
        f"re-quantised {coefficients:,} ({100 * coefficients / pixels - 100:+.1f} %)"
    )
    if args.score:
        print_scores(taken)


def print_scores(taken: list[bytes]) -> None:
    """Mean SSIMULACRA2 against the source's pixels: decode + encode, and re-quantised."""
    from imgcompress_core._score import score

    pixel_scores, coefficient_scores = [], []
    for data in taken:
        source = pillow_decode(data)
        pixel_scores.append(score(source, pillow_decode(arrays_round_trip(data))))
        coefficient_scores.append(score(source, pillow_decode(jpeg_requantised(data, 50) or b"")))
    differences = [c - p for c, p in zip(coefficient_scores, pixel_scores, strict=True)]
    print(
        f"SSIMULACRA2 against the source, mean: decode + encode "
        f"{sum(pixel_scores) / len(taken):.2f}, re-quantised "
        f"{sum(coefficient_scores) / len(taken):.2f} (per JPEG {min(differences):+.2f} "
        f"to {max(differences):+.2f})"
    )


if __name__ == "__main__":
    main()
