"""Benchmark the whole pipeline against sharp and bare Pillow doing the same job.

    .venv/bin/python benchmarks/vs_sharp.py [--only same:all,flatten:all] [--rounds 3]
        [--alternate K] [--env NAME=VALUE] [--py-spy PREFIX] [--json out.json]

Rows (job:subset): ``same`` is imgcompress's default job (JPEG q50 for opaque images,
WebP q50 for transparent ones), ``flatten`` its job with ``output_background=#ffffff``
(transparent images flattened onto white, everything JPEG q50: sharp's usual recipe).
Subsets of the corpus: ``all`` (300 URLs), ``jpeg`` (the JPEGs, 300 URLs), ``png`` (the
PNGs, 100 URLs). For every row, in this order and in one process tree:

1. bare Pillow (``approaches.bare_pillow_job``) in a process pool of one process per CPU,
   the same N tasks; median of ``--rounds`` after a warm-up;
2. sharp (``peers/sharp_job.mjs``): the same N tasks (the CSV's files, in its order) all
   in flight, sharp's default effort, after an untimed warm-up; median of ``--rounds``.
   It is told which files are transparent (it does not pay for finding out);
3. the pipeline: ``imgcompress serve`` (``pipeline.Stack``: fresh SQLite store, defaults,
   pacing off) given a CSV of N URLs, timed from the upload to ``finishedAt`` (one run).
   Every URL serves distinct bytes (a trailer after the image), so the service compresses
   each one as sharp does, instead of reusing an earlier identical download's output.

With ``--alternate K`` (bare Pillow first, once), sharp and the pipeline run K times each,
one after the other (sharp, pipeline, sharp, pipeline, ...), so a machine whose speed
drifts slows both alike; the row reports the medians, each pair's ratio and the median of
those ratios (the figure drift moves least), and the JSON each pair.

CPU ms per image: sharp's whole process (all its threads), bare Pillow's process tree, the
service's process tree (compression children included). The machine is shared: compare
the ratios of one run, and the CPU columns, which load moves less than wall time.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from approaches import bare_pillow_job, is_transparent
from corpus import DEFAULT_FOLDER, Corpus
from peers.sharp import SharpUnavailable, run_sharp_job
from pipeline import Stack, make_csv, run_job
from procinfo import CpuMeter, cpu_count, own_cpu_seconds, tree_cpu_seconds, wait_quiet

SUBSETS = {"all": ((".jpg", ".jpeg", ".png"), 300), "jpeg": ((".jpg", ".jpeg"), 300)}
SUBSETS["png"] = ((".png",), 100)
JOBS = ("same", "flatten")
DEFAULT_ROWS = ("same:all", "same:jpeg", "same:png", "flatten:all")
FLATTEN_ENV = "IMGCOMPRESS_OUTPUT_BACKGROUND=#ffffff"


@dataclass
class Subset:
    """Part of the corpus, in name order (the CSV's), and the job's N tasks over it."""

    corpus: Corpus
    names: list[str]
    transparent: list[bool]
    n: int

    @classmethod
    def of(cls, corpus: Corpus, suffixes: Sequence[str], n: int) -> Subset:
        """The corpus files whose suffix is one of ``suffixes``, in name order."""
        keep = sorted(
            (i for i, p in enumerate(corpus.paths) if p.suffix.lower() in suffixes),
            key=lambda i: corpus.paths[i].name,
        )
        part = Corpus(
            corpus.folder,
            [corpus.paths[i] for i in keep],
            [corpus.data[i] for i in keep],
            [corpus.megapixels[i] for i in keep],
        )
        transparent = []
        for blob in part.data:
            with Image.open(io.BytesIO(blob)) as im:
                transparent.append(is_transparent(im))
        return cls(part, [p.name for p in part.paths], transparent, n)

    def tasks(self) -> list[int]:
        """The file index of every task: the CSV's rows cycle through the names."""
        return [i % len(self.names) for i in range(self.n)]

    def input_bytes(self) -> int:
        """Bytes of every task's input."""
        return sum(len(self.corpus.data[i]) for i in self.tasks())


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's report, or several runs' with every number the median of theirs."""
    merged = dict(runs[0])
    if len(runs) > 1:
        for key, value in runs[0].items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                merged[key] = round(_median([run[key] for run in runs]), 4)
        merged["runs"] = len(runs)
    return merged


def run_sharp_row(subset: Subset, job: str, quality: int, rounds: int) -> dict[str, Any]:
    """sharp doing the row's job: img/s, CPU ms per image, out/in."""
    tasks = [(i, "webp" if subset.transparent[i] else "jpeg") for i in subset.tasks()]
    meter = CpuMeter()
    result = run_sharp_job(subset.corpus.paths, tasks, job, quality, rounds)
    seconds = _median(result["times"])
    return {
        "images_per_s": round(subset.n / seconds, 2),
        "cpu_ms_per_image": round(1000 * _median(result["cpu"]) / subset.n, 1),
        "times_s": [round(t, 3) for t in result["times"]],
        "bytes_out_in": round(result["outBytes"] / subset.input_bytes(), 4),
        "info": result["info"],
        "other_load_cores": meter.other_load(),
    }


def run_bare_row(subset: Subset, job: str, quality: int, rounds: int) -> dict[str, Any]:
    """Bare Pillow in a process pool doing the row's job."""
    fn = partial(bare_pillow_job, quality=quality, flatten=job == "flatten")
    data = [subset.corpus.data[i] for i in subset.tasks()]
    times, cpus = [], []
    outputs: list[bytes | None] = []
    meter = CpuMeter()
    with ProcessPoolExecutor(cpu_count()) as pool:
        list(pool.map(fn, subset.corpus.data))  # warm-up: the processes start, imports
        for _ in range(rounds):
            cpu, start = tree_cpu_seconds(os.getpid()), time.perf_counter()
            outputs = list(pool.map(fn, data))
            times.append(time.perf_counter() - start)
            cpus.append(tree_cpu_seconds(os.getpid()) - cpu)
    out = sum(len(o or b"") for o in outputs)
    return {
        "images_per_s": round(subset.n / _median(times), 2),
        "cpu_ms_per_image": round(1000 * _median(cpus) / subset.n, 1),
        "times_s": [round(t, 3) for t in times],
        "bytes_out_in": round(out / subset.input_bytes(), 4),
        "failures": sum(o is None for o in outputs),
        "other_load_cores": meter.other_load(),
    }


def run_pipeline_row(
    subset: Subset, job: str, env: Sequence[str], py_spy: Path | None, quiet: float
) -> dict[str, Any]:
    """The whole pipeline doing the row's job once: upload to finishedAt."""
    extra = [*env, FLATTEN_ENV] if job == "flatten" else list(env)
    with tempfile.TemporaryDirectory(prefix="imgcompress-vs-sharp-") as tmp:
        stack = Stack(
            subset.corpus, Path(tmp), store="sqlite", extra_env=extra, py_spy=py_spy, distinct=True
        )
        with stack:
            wait_quiet(timeout=quiet)
            meter = CpuMeter()
            csv = make_csv(stack.images, subset.names, subset.n)
            serve0 = own_cpu_seconds(stack.service.pid)
            # Only what the row needs: no full status documents before the last, no
            # memory samples (both cost CPU on the cores the service is measured on).
            result = run_job(stack.base, csv, 0.25, float("inf"), stack.service.pid, None)
            serve = own_cpu_seconds(stack.service.pid) - serve0
            load = meter.other_load()
    if result["failed"]:
        print(f"warning: {result['failed']} images failed: {result['failure_reasons']}")
    return {
        "images_per_s": round(result["images"] / result["elapsed_s"], 2),
        "cpu_ms_per_image": round(1000 * result["service_cpu_s"] / result["images"], 1),
        "serve_cpu_ms_per_image": round(1000 * serve / result["images"], 1),
        "elapsed_s": result["elapsed_s"],
        "bytes_out_in": result["bytes_out_in"],
        "failed": result["failed"],
        "other_load_cores": load,
        "service_env": extra,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every asked row; return the report."""
    corpus = Corpus.load(args.folder)
    rows = []
    for spec in args.only.split(","):
        job, name = spec.split(":")
        suffixes, n = SUBSETS[name]
        subset = Subset.of(corpus, suffixes, args.n or n)
        row: dict[str, Any] = {"job": job, "subset": name, "files": len(subset.names)}
        row["urls"] = subset.n
        row["sharp"] = {"skipped": "--no-peers"}
        row["bare"] = {"images_per_s": float("nan"), "cpu_ms_per_image": "-"}
        row["bare"] |= {"bytes_out_in": float("nan"), "other_load_cores": "-"}
        if not args.no_peers:
            wait_quiet(timeout=args.quiet_wait)
            row["bare"] = run_bare_row(subset, job, args.quality, args.rounds)
        spy = args.py_spy.with_name(f"{args.py_spy.name}.{job}-{name}") if args.py_spy else None
        sharps, pipelines = [], []
        for _ in range(args.alternate):  # sharp, then the pipeline, then again: both see
            if not args.no_peers and "skipped" not in (sharps or [{}])[0]:  # the drift alike
                wait_quiet(timeout=args.quiet_wait)
                try:
                    sharps.append(run_sharp_row(subset, job, args.quality, args.rounds))
                except SharpUnavailable as exc:
                    sharps = [{"skipped": str(exc)}]
            pipelines.append(run_pipeline_row(subset, job, args.env, spy, args.quiet_wait))
        row["sharp"] = _medians(sharps) if sharps else row["sharp"]
        row["pipeline"] = _medians(pipelines)
        if len(pipelines) > 1:
            row["pairs"] = [
                {"pipeline": p["images_per_s"], "sharp": s.get("images_per_s")}
                for p, s in zip(pipelines, sharps + [{}] * len(pipelines), strict=False)
            ]
            ratios = [p["pipeline"] / p["sharp"] for p in row["pairs"] if p["sharp"]]
            # Each pair ran back to back, so its ratio is what drift moves least.
            row["pair_ratios"] = [round(r, 3) for r in ratios]
            row["vs_sharp_pairs"] = round(_median(ratios), 3) if ratios else None
        pipeline = row["pipeline"]["images_per_s"]
        sharp = row["sharp"].get("images_per_s")
        row["vs_sharp"] = round(pipeline / sharp, 3) if sharp else None
        row["vs_bare"] = round(pipeline / row["bare"]["images_per_s"], 3)
        # The same ratio from CPU time per image: what it would be on an otherwise idle
        # machine if both kept every core busy (load moves it less than wall time).
        sharp_cpu = row["sharp"].get("cpu_ms_per_image")
        own_cpu = row["pipeline"]["cpu_ms_per_image"]
        row["vs_sharp_cpu"] = round(sharp_cpu / own_cpu, 3) if sharp_cpu else None
        print_row(row)
        rows.append(row)
    return {
        "benchmark": "vs_sharp",
        "cpus": cpu_count(),
        "quality": args.quality,
        "rounds": args.rounds,
        "rows": rows,
    }


HEAD = (
    "| job | files, URLs | pipeline img/s | sharp img/s | pipeline / sharp | by CPU time "
    "| bare Pillow img/s "
    "| pipeline / bare | CPU ms/img pipeline (serve), sharp, bare | out/in pipeline, sharp, bare "
    "| other load (cores) |"
)


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def print_row(row: dict[str, Any]) -> None:
    """Print one row of the table (the header first, once)."""
    if not getattr(print_row, "headed", False):
        print(HEAD)
        print("|" + " --- |" * HEAD.count(" |"))
        print_row.headed = True  # type: ignore[attr-defined]
    p, s, b = row["pipeline"], row["sharp"], row["bare"]
    ratio = f"**{row['vs_sharp']:.2f}x**" if row["vs_sharp"] else s.get("skipped", "-")
    if row.get("vs_sharp_pairs"):
        pairs = ", ".join(f"{r:.2f}" for r in row["pair_ratios"])
        ratio += f" (pairs {pairs}; median **{row['vs_sharp_pairs']:.2f}x**)"
    cpu = f"{p['cpu_ms_per_image']} ({p['serve_cpu_ms_per_image']}), "
    cpu += f"{s.get('cpu_ms_per_image', '-')}, {b['cpu_ms_per_image']}"
    out = f"{p['bytes_out_in']:.3f}, {s.get('bytes_out_in', '-')}, {b['bytes_out_in']:.3f}"
    load = f"{p['other_load_cores']}, {s.get('other_load_cores', '-')}, {b['other_load_cores']}"
    print(
        f"| {row['job']}:{row['subset']} | {row['files']}, {row['urls']} | {p['images_per_s']} "
        f"| {s.get('images_per_s', '-')} | {ratio} | {_x(row['vs_sharp_cpu'])} "
        f"| {b['images_per_s']} "
        f"| {row['vs_bare']:.2f}x | {cpu} | {out} | {load} |",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, run, print, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(DEFAULT_ROWS), help="rows, job:subset")
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("-n", type=int, help="URLs per row (default: 300, 100 for png)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of sharp and bare Pillow")
    parser.add_argument(
        "--alternate",
        type=int,
        default=1,
        help="run sharp and the pipeline this many times each, alternately (medians)",
    )
    parser.add_argument("--quality", type=int, default=50)
    parser.add_argument("--quiet-wait", type=float, default=20.0, help="max s to wait for quiet")
    parser.add_argument("--py-spy", type=Path, help="profile each pipeline run into PREFIX.ROW")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra service env"
    )
    parser.add_argument(
        "--no-peers", action="store_true", help="the pipeline only (to compare its CPU/image)"
    )
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    for spec in args.only.split(","):
        job, _, name = spec.partition(":")
        if job not in JOBS or name not in SUBSETS:
            parser.error(f"unknown row {spec!r}: job in {JOBS}, subset in {tuple(SUBSETS)}")
    report = run(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
