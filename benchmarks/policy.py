"""The output policy's formats and its quality search, over the corpus.

Three measurements, every one printed as a table (and with ``--json FILE`` written out):

1. **Bytes at equal SSIMULACRA2, per format.** Each corpus image, scaled to 1200 px on
   its long side (as issue 13 measured; a whole-image score costs about a second per
   megapixel), is written as JPEG at quality 50 (``compress_image``'s default); its
   whole-image SSIMULACRA2 is the image's reference score. For WebP and AVIF the lowest
   quality whose whole-image score reaches that reference is found by bisection, and its
   bytes counted. sharp's defaults (``jpeg()`` q80, ``webp()`` q80, ``avif()`` q50, run by
   ``peers/sharp_formats.mjs`` on the same scaled inputs) are scored the same way, as the
   reference of the seed's library.
2. **target_quality**: ``compress_image`` with ``target_quality=T`` for each format on the
   same scaled images; the output's *whole-image* score against the target (how often
   it is reached, how often within 2 points below).
3. **CPU cost**: CPU seconds of ``compress_image`` on the full-size corpus with
   ``target_quality`` against the default fixed quality.
4. **curves** (not run by default): for each codec and a grid of qualities, the sample's
   score (the search's estimate before the bias is taken off) and the whole image's
   score, on the same scaled images: the median curves and the sample's mean bias are
   the constants of the search (``_encode._CURVES``, ``_score._SAMPLE_BIAS``).

The whole-image scores of measurements 1 and 2 are the ``ssimulacra2`` package's (part of
the test extra), not our scorer's, so the search is judged by the reference
implementation; measurement 4 scores 33 encodes per image and uses ours (the same to
within 0.05 points, ``tests/integration/test_ssimulacra2.py``).

Usage::

    .venv/bin/python benchmarks/policy.py [FOLDER] [--target 70] [--limit N] [--json policy.json]
    .venv/bin/python benchmarks/policy.py --only curves --json curves.json
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from statistics import mean, median
from typing import Any

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import DEFAULT_FOLDER, SUFFIXES
from peers.sharp import SHARP_HOME, SharpUnavailable, _install

from imgcompress_core import _score
from imgcompress_core._encode import encode
from imgcompress_core.compress import CompressOptions, compress_image
from imgcompress_core.policy import OutputPolicy

LONG_SIDE = 1200
FORMATS = ("jpeg", "webp", "avif")
SHARP_RUNNER = Path(__file__).with_name("peers") / "sharp_formats.mjs"


def scaled(path: Path) -> Image.Image:
    """The image at 1200 px on its long side, RGB (transparent ones on mid grey)."""
    with Image.open(path) as im:
        im.draft("RGB", (LONG_SIDE, LONG_SIDE))
        im.load()
        if im.mode in ("RGBA", "LA", "P"):
            rgba = im.convert("RGBA")
            flat = Image.new("RGB", im.size, (128, 128, 128))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            im = flat
        rgb = im.convert("RGB")
    rgb.thumbnail((LONG_SIDE, LONG_SIDE), Image.Resampling.LANCZOS)
    return rgb


def decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.convert("RGB")


def whole_score(reference: Image.Image, data: bytes) -> float:
    """The whole image's score, by the reference implementation (the package)."""
    from ssimulacra2 import compute_ssimulacra2

    def ppm(image: Image.Image) -> io.BytesIO:
        out = io.BytesIO()
        image.convert("RGB").save(out, format="PPM")
        out.seek(0)
        return out

    return float(compute_ssimulacra2(ppm(reference), ppm(decoded(data))))


def equal_score(path: Path) -> dict[str, Any]:
    """Measurement 1 for one image: bytes of each format at JPEG q50's score."""
    image = scaled(path)
    jpeg = encode(image, "jpeg", 50, {})
    reference = whole_score(image, jpeg)
    row: dict[str, Any] = {"name": path.name, "score": reference, "jpeg": len(jpeg)}
    for fmt in ("webp", "avif"):
        low, high = 1, 100  # the lowest quality reaching the reference is in [low, high]
        found: dict[int, tuple[float, int]] = {}
        while low < high:
            middle = (low + high) // 2
            data = encode(image, fmt, middle, {})
            found[middle] = (whole_score(image, data), len(data))
            if found[middle][0] >= reference:
                high = middle
            else:
                low = middle + 1
        if high not in found:
            data = encode(image, fmt, high, {})
            found[high] = (whole_score(image, data), len(data))
        row[fmt] = found[high][1]
        row[f"{fmt}_quality"] = high
    return row


def target_run(job: tuple[Path, str, float]) -> dict[str, Any]:
    """Measurement 2 for one image and format: the whole-image score of target_quality."""
    path, fmt, target = job
    image = scaled(path)
    source = io.BytesIO()
    image.save(source, "PNG")
    policy = OutputPolicy(format=fmt, target_quality=target)
    result = compress_image(source.getvalue(), CompressOptions(policy=policy))
    return {
        "name": path.name,
        "format": fmt,
        "estimate": result.score,
        "whole": whole_score(image, result.data),
        "quality": result.quality,
        "bytes": len(result.data),
    }


def cpu_run(job: tuple[Path, OutputPolicy]) -> float:
    """Measurement 3 for one full-size image: CPU seconds of one compress_image."""
    path, policy = job
    data = path.read_bytes()
    started = time.process_time()
    compress_image(data, CompressOptions(policy=policy))
    return time.process_time() - started


CURVE_QUALITIES = (15, 25, 35, 45, 55, 62, 70, 78, 85, 92, 97)


def curve_run(path: Path) -> list[dict[str, Any]]:
    """Measurement 4 for one image: sample and whole scores over the quality grid."""
    image = scaled(path)
    rows: list[dict[str, Any]] = []
    for fmt in FORMATS:
        tiles = _score.tiles(image, fmt)
        sample = _score.reference(_score.mosaic(tiles, "RGB"))
        for quality in CURVE_QUALITIES:
            whole = encode(image, fmt, quality, {})
            parts = [decoded(encode(tile, fmt, quality, {})) for tile in tiles]
            rows.append(
                {
                    "name": path.name,
                    "format": fmt,
                    "quality": quality,
                    "tiles": len(tiles),
                    "sample": sample.score(_score.mosaic(parts, "RGB")),
                    "whole": _score.score(image, decoded(whole)),
                }
            )
    return rows


def run_sharp_on_scaled(
    runner: Path, paths: list[Path], workdir: Path, out: Path, timeout: float
) -> tuple[list[str], dict[str, Any]]:
    """Scale each image (``scaled``) to a PNG in ``workdir``, run the sharp script
    ``runner`` over them writing to ``out``; return the inputs and what it printed."""
    node = shutil.which("node")
    if node is None:
        raise SharpUnavailable("node is not on PATH")
    _install()
    inputs = []
    for index, path in enumerate(paths):
        target = workdir / f"{index}.png"
        scaled(path).save(target)
        inputs.append(str(target))
    listing = workdir / "files.json"
    listing.write_text(json.dumps(inputs))
    command = [node, str(runner), str(SHARP_HOME), str(listing), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise SharpUnavailable(done.stderr.strip()[-500:])
    info: dict[str, Any] = json.loads(done.stdout)
    return inputs, info


def sharp_defaults(paths: list[Path], workdir: Path) -> dict[str, Any]:
    """sharp's default JPEG, WebP and AVIF of each scaled image: bytes and whole score."""
    out = workdir / "sharp"
    inputs, info = run_sharp_on_scaled(SHARP_RUNNER, paths, workdir, out, 1800)
    rows: dict[str, list[tuple[int, float]]] = {}
    for fmt in FORMATS:
        rows[fmt] = []
        for index, source in enumerate(inputs):
            with Image.open(source) as reference:
                data = (out / fmt / f"{index}.{fmt}").read_bytes()
                rows[fmt].append((len(data), whole_score(reference.convert("RGB"), data)))
    return {"info": info, "rows": rows}


def parallel(function: Callable[[Any], Any], jobs: list[Any], workers: int) -> list[Any]:
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(function, jobs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--target", type=float, default=70.0)
    parser.add_argument("--limit", type=int, default=0, help="the first N images only")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-sharp", action="store_true")
    parser.add_argument(
        "--only", default="equal,target,cpu", help="the measurements to run (comma-separated)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not _score.available():
        raise SystemExit("needs the scorer: pip install -e '.[target]'")
    paths = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in SUFFIXES)
    paths = paths[: args.limit] if args.limit else paths
    report: dict[str, Any] = {"images": len(paths), "target": args.target}

    only = set(args.only.split(","))
    if "equal" in only:
        equal(paths, args, report)
    if "target" in only:
        target(paths, args, report)
    if "cpu" in only:
        cpu_cost(paths, args, report)
    if "curves" in only:
        curves(paths, args, report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


def equal(paths: list[Path], args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Measurement 1, printed."""
    rows = parallel(equal_score, paths, args.workers)
    report["equal_score"] = rows
    total = {fmt: sum(r[fmt] for r in rows) for fmt in FORMATS}
    print(f"\n1. Bytes at equal SSIMULACRA2 ({len(paths)} images, 1200 px, the score of JPEG q50,")
    print(f"   mean {mean(r['score'] for r in rows):.1f})\n")
    print("| format | total KB | vs JPEG | median quality |")
    print("| --- | --- | --- | --- |")
    for fmt in FORMATS:
        quality = "50" if fmt == "jpeg" else f"{median(r[f'{fmt}_quality'] for r in rows):.0f}"
        print(f"| {fmt} | {total[fmt] / 1000:.0f} | {total[fmt] / total['jpeg']:.2f} | {quality} |")

    if not args.no_sharp:
        try:
            with tempfile.TemporaryDirectory() as workdir:
                sharp = sharp_defaults(paths, Path(workdir))
            report["sharp"] = sharp
            print(f"\n   sharp {sharp['info'].get('sharp')} defaults on the same inputs:\n")
            print("| sharp | quality | total KB | mean score |")
            print("| --- | --- | --- | --- |")
            for fmt, quality in (("jpeg", 80), ("webp", 80), ("avif", 50)):
                found = sharp["rows"][fmt]
                kb = sum(b for b, _ in found) / 1000
                print(f"| {fmt} | {quality} | {kb:.0f} | {mean(s for _, s in found):.1f} |")
        except SharpUnavailable as exc:
            print(f"\n   sharp skipped: {exc}")


def target(paths: list[Path], args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Measurement 2, printed."""
    jobs = [(p, fmt, args.target) for fmt in FORMATS for p in paths]
    results = parallel(target_run, jobs, args.workers)
    report["target_quality"] = results
    print(f"\n2. target_quality={args.target:g}: the whole image's score\n")
    print("| format | reached | within 2 below | mean whole score | mean estimate | KB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for fmt in FORMATS:
        mine = [r for r in results if r["format"] == fmt]
        reached = sum(r["whole"] >= args.target for r in mine) / len(mine)
        close = sum(r["whole"] >= args.target - 2 for r in mine) / len(mine)
        whole, estimate = mean(r["whole"] for r in mine), mean(r["estimate"] for r in mine)
        kb = sum(r["bytes"] for r in mine) / 1000
        print(f"| {fmt} | {reached:.0%} | {close:.0%} | {whole:.1f} | {estimate:.1f} | {kb:.0f} |")


def cpu_cost(paths: list[Path], args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Measurement 3, printed."""
    print("\n3. CPU seconds per image, full-size corpus (sum over images)\n")
    print("| policy | CPU s | vs fixed quality |")
    print("| --- | --- | --- |")
    cpu: dict[str, float] = {}
    for name, policy in (
        ("jpeg, quality 50 (default)", OutputPolicy()),
        (f"jpeg, target {args.target:g}", OutputPolicy(target_quality=args.target)),
        ("webp, quality 50", OutputPolicy(format="webp")),
        (f"webp, target {args.target:g}", OutputPolicy(format="webp", target_quality=args.target)),
        ("avif, quality 50", OutputPolicy(format="avif")),
        (f"avif, target {args.target:g}", OutputPolicy(format="avif", target_quality=args.target)),
    ):
        cpu[name] = sum(parallel(cpu_run, [(p, policy) for p in paths], args.workers))
    report["cpu"] = cpu
    base = {
        "jpeg": cpu["jpeg, quality 50 (default)"],
        "webp": cpu["webp, quality 50"],
        "avif": cpu["avif, quality 50"],
    }
    for name, seconds in cpu.items():
        print(f"| {name} | {seconds:.1f} | {seconds / base[name[:4]]:.1f}x |")


def curves(paths: list[Path], args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Measurement 4, printed: median scores per quality and the sample's bias."""
    rows = [row for found in parallel(curve_run, paths, args.workers) for row in found]
    report["curves"] = rows
    print(f"\n4. Median sample and whole-image scores per quality ({len(paths)} images)\n")
    print("| format | quality | median sample | median whole | mean sample - whole |")
    print("| --- | --- | --- | --- | --- |")
    for fmt in FORMATS:
        for quality in CURVE_QUALITIES:
            mine = [r for r in rows if r["format"] == fmt and r["quality"] == quality]
            tiled = [r for r in mine if r["tiles"] > 1]
            bias = mean(r["sample"] - r["whole"] for r in tiled) if tiled else 0.0
            print(
                f"| {fmt} | {quality} | {median(r['sample'] for r in mine):.1f} | "
                f"{median(r['whole'] for r in mine):.1f} | {bias:+.2f} |"
            )


if __name__ == "__main__":
    main()
