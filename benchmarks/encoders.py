"""JPEG encoders at equal SSIMULACRA2: libjpeg-turbo (ours), jpegli, MozJPEG and sharp.

Over the folder's opaque images (transparent ones are skipped: JPEG has no alpha), each
scaled to 1200 px on its long side as ``policy.py`` does (a whole-image SSIMULACRA2 costs
about a second per megapixel in pure numpy):

1. **Bytes at equal score.** The reference score of an image is our JPEG at quality 50
   (``imgcompress_core._encode.encode``: Pillow's libjpeg-turbo, Huffman-optimised,
   baseline, 4:2:0). For every encoder the lowest quality whose whole-image score reaches
   it is searched (interpolation between the qualities tried, down to one step: exact, not
   an estimate), and its bytes summed. The same is done against the score of sharp's
   default ``jpeg()`` (quality 80): the issue's goal is bytes at least 10 % below sharp's
   defaults at equal score. Each encoder's own score and bytes at quality 50 are listed.
2. **Encode CPU per image** on the 1200 px images, at quality 50: the median of 3 encodes,
   ``time.process_time`` (this process's CPU, every thread), including the conversion of
   the pixels each encoder takes (``tobytes`` for jpegli, a libvips image for MozJPEG).
3. **Pipeline impact**: ``compress_image`` with the default options on every full-size
   image (CPU time), with the JPEG encode inside it timed; then the same pixels encoded by
   jpegli and MozJPEG. The projected throughput of the compress step with another encoder
   is ``sum(total) / sum(total - ours + theirs)``; for jpegli, ``compress_image`` with
   ``jpeg_encoder="jpegli"`` is also timed as it is.

Encoders:

- ``turbo``: ours (above).
- ``jpegli``: ``pyjpegli.encode`` (packed RGB only; jpegli's defaults: adaptive
  quantisation, 4:2:0 at these qualities).
- ``mozjpeg``: libvips' ``jpegsave`` through ``pyvips`` (its binary wheel links MozJPEG)
  with the settings of sharp's ``mozjpeg: true``: trellis quantisation, overshoot
  deringing, optimised progressive scans, quantisation table 3, Huffman-optimised.
- ``robidoux``: ours with other quantisation tables: the one N. Robidoux tuned for
  ImageMagick, which MozJPEG uses by default (its table 3), for luma and chroma, scaled
  by quality as libjpeg scales its own (Pillow's ``qtables``). Same encoder, same cost;
  only the tables differ (and the ``imagecodecs`` fast path, which cannot take tables).
- ``robidoux-progressive``: the same, written as a progressive JPEG (libjpeg's default
  scan script, Huffman-optimised per scan).
- ``sharp``: sharp's default ``jpeg({quality})`` (libjpeg-turbo-compatible settings) at
  every quality 1..100 by ``peers/sharp_qualities.mjs``, from the same scaled pixels.

Benchmark-only dependencies, not the project's::

    .venv/bin/pip install -e ".[target]" pyjpegli "pyvips[binary]"
    .venv/bin/python benchmarks/encoders.py [FOLDER] [--limit N] [--json encoders.json]

A missing encoder package skips its rows (the header says why); sharp needs node and npm.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import mean, median
from typing import Any

os.environ.setdefault("VIPS_CONCURRENCY", "1")  # one thread: the pool runs one image per CPU

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import DEFAULT_FOLDER, SUFFIXES
from peers.sharp import SharpUnavailable
from policy import parallel, run_sharp_on_scaled, scaled, whole_score

from imgcompress_core import _encode, _score
from imgcompress_core.compress import CompressOptions, compress_image

SHARP_RUNNER = Path(__file__).with_name("peers") / "sharp_qualities.mjs"
ENCODERS = ("turbo", "robidoux", "robidoux-progressive", "jpegli", "mozjpeg", "sharp")
SHARP_DEFAULT = 80
SLOPE = 0.5  # score points per quality step near 50-80 (first steps of the search)

Encoder = Callable[[Image.Image, int], bytes]


def _turbo(image: Image.Image, quality: int) -> bytes:
    return _encode.encode(image, "jpeg", quality, {})


def _robidoux(image: Image.Image, quality: int) -> bytes:
    return _encode.encode(image, "jpeg", quality, {}, jpeg_encoder="libjpeg-turbo-robidoux")


def _robidoux_progressive(image: Image.Image, quality: int) -> bytes:
    robidoux = "libjpeg-turbo-robidoux"
    return _encode.encode(image, "jpeg", quality, {}, jpeg_encoder=robidoux, progressive=True)


def _jpegli(image: Image.Image, quality: int) -> bytes:
    import pyjpegli

    return pyjpegli.encode(image.tobytes(), image.width, image.height, quality=quality)


def _mozjpeg(image: Image.Image, quality: int) -> bytes:
    import pyvips

    pixels = pyvips.Image.new_from_memory(image.tobytes(), image.width, image.height, 3, "uchar")
    data: bytes = pixels.jpegsave_buffer(
        Q=quality,
        optimize_coding=True,
        trellis_quant=True,
        overshoot_deringing=True,
        optimize_scans=True,
        quant_table=3,
        keep="none",
    )
    return data


PYTHON_ENCODERS: dict[str, Encoder] = {
    "turbo": _turbo,
    "robidoux": _robidoux,
    "robidoux-progressive": _robidoux_progressive,
    "jpegli": _jpegli,
    "mozjpeg": _mozjpeg,
}


def available() -> dict[str, str | None]:
    """Each Python encoder's version, or None when it does not import."""
    found: dict[str, str | None] = dict.fromkeys(PYTHON_ENCODERS)
    from PIL import __version__, features

    found["turbo"] = f"Pillow {__version__}, libjpeg-turbo {features.version('libjpeg_turbo')}"
    found["robidoux"] = found["robidoux-progressive"] = found["turbo"]
    try:
        from importlib.metadata import version

        import pyjpegli  # noqa: F401

        found["jpegli"] = f"pyjpegli {version('pyjpegli')}"
    except ImportError:
        pass
    try:
        import pyvips

        libvips = ".".join(str(pyvips.version(i)) for i in range(3))
        found["mozjpeg"] = f"pyvips {pyvips.__version__}, libvips {libvips}"
    except (ImportError, OSError):
        pass
    return found


class Scored:
    """One image's encodes and scores, cached per encoder and quality."""

    def __init__(self, image: Image.Image, encode: Callable[[int], bytes]) -> None:
        self.image, self.encode = image, encode
        self.found: dict[int, tuple[float, int]] = {}

    def at(self, quality: int) -> tuple[float, int]:
        """The whole-image score and bytes at ``quality``."""
        if quality not in self.found:
            data = self.encode(quality)
            self.found[quality] = (whole_score(self.image, data), len(data))
        return self.found[quality]

    def lowest(self, target: float, guess: int) -> int:
        """The lowest quality whose score reaches ``target`` (100 when none does)."""
        low, high = 1, 100  # the answer is in [low, high]; score(low - 1) < target
        probe = guess
        while low < high:
            if self.at(probe)[0] >= target:
                high = probe
            else:
                low = probe + 1
            probe = self._next(target, low, high)
        return high

    def _next(self, target: float, low: int, high: int) -> int:
        """The next quality to try in [low, high): interpolated between the nearest
        qualities tried on each side of the target, or a step of the usual slope."""
        if low >= high:
            return high
        below = [q for q in self.found if q < low]
        above = [q for q in self.found if q >= high and self.found[q][0] >= target]
        estimate: float = (low + high) // 2
        if below and above:
            a, b = max(below), min(above)
            sa, sb = self.found[a][0], self.found[b][0]
            if sb > sa:
                estimate = a + (target - sa) * (b - a) / (sb - sa)
        elif above:
            b = min(above)
            estimate = b - (self.found[b][0] - target) / SLOPE - 1
        elif below:
            a = max(below)
            estimate = a + (target - self.found[a][0]) / SLOPE + 1
        return max(low, min(high - 1, round(estimate)))


def cpu_ms(function: Callable[[], object], rounds: int = 3) -> float:
    """Median process CPU milliseconds of ``function()``."""
    spent = []
    for _ in range(rounds):
        started = time.process_time()
        function()
        spent.append((time.process_time() - started) * 1000)
    return median(spent)


def equal_score(job: tuple[Path, int, str | None, list[str]]) -> dict[str, Any]:
    """Measurements 1 and 2 for one image."""
    path, index, sharp_dir, names = job
    image = scaled(path)
    encoders: dict[str, Scored] = {
        name: Scored(image, lambda q, f=PYTHON_ENCODERS[name]: f(image, q)) for name in names
    }
    if sharp_dir is not None:
        folder = Path(sharp_dir) / str(index)
        encoders["sharp"] = Scored(image, lambda q: (folder / f"{q}.jpg").read_bytes())
    reference = encoders["turbo"].at(50)[0]
    row: dict[str, Any] = {"name": path.name, "reference": reference}
    sharp_score = encoders["sharp"].at(SHARP_DEFAULT)[0] if "sharp" in encoders else None
    row["sharp_default"] = sharp_score
    row["sharp_default_bytes"] = encoders["sharp"].at(SHARP_DEFAULT)[1] if sharp_score else None
    for name, scored in encoders.items():
        mine: dict[str, Any] = {}
        mine["q50_score"], mine["q50_bytes"] = scored.at(50)
        quality = scored.lowest(reference, 50)
        mine["ref_quality"], mine["ref_bytes"] = quality, scored.at(quality)[1]
        if sharp_score is not None:
            quality = scored.lowest(sharp_score, SHARP_DEFAULT)
            mine["sharp_quality"], mine["sharp_bytes"] = quality, scored.at(quality)[1]
        mine["scores"] = len(scored.found)
        if name in PYTHON_ENCODERS:
            mine["cpu_ms"] = cpu_ms(lambda f=PYTHON_ENCODERS[name]: f(image, 50))
        row[name] = mine
    return row


def pipeline_cost(job: tuple[Path, list[str]]) -> dict[str, Any]:
    """Measurement 3 for one full-size image: compress_image's CPU, the JPEG encode's
    share of it, and the same pixels through the other encoders."""
    path, names = job
    data = path.read_bytes()
    captured: list[Image.Image] = []
    inside: list[float] = []
    original = _encode.encode

    def timed(image: Image.Image, fmt: str, level: int, extra: Any, **named: Any) -> bytes:
        started = time.process_time()
        out = original(image, fmt, level, extra, **named)
        inside.append(time.process_time() - started)
        if fmt == "jpeg":
            captured.append(image)
        return out

    totals = []
    _encode.encode = timed  # search() looks encode up in its module on every call
    try:
        for _ in range(3):
            started = time.process_time()
            result = compress_image(data)
            totals.append(time.process_time() - started)
    finally:
        _encode.encode = original
    row: dict[str, Any] = {"name": path.name, "output": result.content_type}
    row["total_ms"] = median(totals) * 1000
    if not captured:  # written as another format (or kept without a JPEG encode)
        return row
    row["turbo_ms"] = median(inside) * 1000
    image = captured[-1]
    row["pixels"] = image.width * image.height
    row["mode"] = image.mode
    for name in names:
        if name != "turbo" and image.mode == "RGB":
            row[f"{name}_ms"] = cpu_ms(lambda f=PYTHON_ENCODERS[name]: f(image, 50))
    if "jpegli" in names:  # the core's own jpegli path, measured rather than projected
        options = CompressOptions(jpeg_encoder="jpegli")
        row["jpegli_total_ms"] = cpu_ms(lambda: compress_image(data, options))
    return row


def opaque(path: Path) -> bool:
    """Whether the image has no alpha channel nor transparent palette entry."""
    with Image.open(path) as im:
        return im.mode not in ("RGBA", "LA", "PA") and "transparency" not in im.info


def sharp_qualities(paths: list[Path], workdir: Path) -> dict[str, Any]:
    """Run sharp over the scaled images at every quality; its versions and CPU times."""
    _, info = run_sharp_on_scaled(SHARP_RUNNER, paths, workdir, workdir / "out", 3600)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--limit", type=int, default=0, help="the first N opaque images only")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-sharp", action="store_true")
    parser.add_argument("--only", default="equal,pipeline", help="measurements (comma-separated)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not _score.available():
        raise SystemExit("needs the scorer: pip install -e '.[target]'")
    versions = available()
    names = [name for name, found in versions.items() if found]
    for name, found in versions.items():
        print(f"{name}: {found or 'not installed, skipped (see the docstring)'}")
    paths = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in SUFFIXES)
    paths = [p for p in paths if opaque(p)]
    paths = paths[: args.limit] if args.limit else paths
    report: dict[str, Any] = {"images": len(paths), "versions": versions}
    only = set(args.only.split(","))
    if "equal" in only:
        with tempfile.TemporaryDirectory() as workdir:
            sharp_dir = None
            if not args.no_sharp:
                try:
                    report["sharp"] = sharp_qualities(paths, Path(workdir))
                    sharp_dir = str(Path(workdir) / "out")
                    print(f"sharp: {report['sharp']['sharp']}, libvips {report['sharp']['vips']}")
                except SharpUnavailable as exc:
                    print(f"sharp: skipped: {exc}")
            jobs = [(p, i, sharp_dir, names) for i, p in enumerate(paths)]
            report["equal"] = parallel(equal_score, jobs, args.workers)
        print_equal(report)
    if "pipeline" in only:
        report["pipeline"] = parallel(pipeline_cost, [(p, names) for p in paths], args.workers)
        print_pipeline(report, names)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


def print_equal(report: dict[str, Any]) -> None:
    """Measurements 1 and 2, printed."""
    rows = report["equal"]
    names = [name for name in ENCODERS if name in rows[0]]
    base = sum(r["turbo"]["ref_bytes"] for r in rows)
    print(f"\n1. {len(rows)} opaque images at 1200 px; reference: our JPEG q50, mean score ")
    print(f"   {mean(r['reference'] for r in rows):.2f}\n")
    print("| encoder | KB at ref score | vs ours | median q | q50 KB | q50 score | CPU ms q50 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in names:
        mine = [r[name] for r in rows]
        kb = sum(m["ref_bytes"] for m in mine)
        cpu = f"{mean(m['cpu_ms'] for m in mine):.1f}" if "cpu_ms" in mine[0] else "-"
        if name == "sharp" and "sharp" in report:
            cpu = f"{mean(report['sharp']['cpu_ms']['50']):.1f}"
        print(
            f"| {name} | {kb / 1000:.0f} | {kb / base:.3f} | "
            f"{median(m['ref_quality'] for m in mine):.0f} | "
            f"{sum(m['q50_bytes'] for m in mine) / 1000:.0f} | "
            f"{mean(m['q50_score'] for m in mine):.2f} | {cpu} |"
        )
    if rows[0]["sharp_default"] is None:
        return
    sharp_kb = sum(r["sharp_default_bytes"] for r in rows)
    print(f"\n2. At the score of sharp's default jpeg() (q{SHARP_DEFAULT}), mean ")
    print(f"   {mean(r['sharp_default'] for r in rows):.2f}, {sharp_kb / 1000:.0f} KB\n")
    print("| encoder | KB | vs sharp default | median q |")
    print("| --- | --- | --- | --- |")
    for name in names:
        kb = sum(r[name]["sharp_bytes"] for r in rows)
        quality = median(r[name]["sharp_quality"] for r in rows)
        print(f"| {name} | {kb / 1000:.0f} | {kb / sharp_kb:.3f} | {quality:.0f} |")
    if "sharp" in report:
        print(f"\n   sharp CPU ms at q80: {mean(report['sharp']['cpu_ms']['80']):.1f}")


def print_pipeline(report: dict[str, Any], names: list[str]) -> None:
    """Measurement 3, printed."""
    rows = [r for r in report["pipeline"] if "turbo_ms" in r and r["mode"] == "RGB"]
    total = sum(r["total_ms"] for r in rows)
    ours = sum(r["turbo_ms"] for r in rows)
    megapixels = sum(r["pixels"] for r in rows) / 1e6
    print(f"\n3. compress_image on {len(rows)} full-size images written as RGB JPEG")
    print(f"   ({megapixels:.0f} MP after the policy); CPU ms, sums over the images\n")
    print("| encoder | encode ms | compress_image ms | projected throughput vs ours |")
    print("| --- | --- | --- | --- |")
    for name in names:
        theirs = sum(r[f"{name}_ms"] for r in rows) if name != "turbo" else ours
        projected = total - ours + theirs
        print(f"| {name} | {theirs:.0f} | {projected:.0f} | {total / projected:.3f} |")
    if "jpegli" in names:
        measured = sum(r["jpegli_total_ms"] for r in rows)
        print(f"\n   compress_image(jpeg_encoder='jpegli'), measured: {measured:.0f} ms,")
        print(f"   throughput {total / measured:.3f} of the default's")


if __name__ == "__main__":
    main()
