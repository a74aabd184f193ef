"""Benchmark ``imgcompress_core.compress_image`` alone over a folder of images.

    .venv/bin/python benchmarks/compress.py [FOLDER] [--rounds N] [--json out.json]

Approaches: ``compress_image`` sequentially, on a thread pool and on a process pool of
``--workers`` (default: the CPUs available); a bare baseline (Pillow decode +
``save(quality=Q, optimize=True)``, no imgcompress logic) sequentially and on a process
pool; sharp through Node when node and npm are present (``peers/sharp.py``). Rounds are
interleaved (round 1 of each, then round 2, ...) after an untimed warm-up; the median is
reported. Images go in largest first, so a pool's last task is small (steady-state
rate, not a tail effect). Before each round the benchmark waits up to ``--quiet-wait``
seconds for other processes to leave the CPUs idle, and reports the load they caused.
Quality, from the last round's outputs: bytes out/in, and luma SSIM against the
original on a sample (``ssim.py``).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import PIL
from PIL import Image, features

sys.path.insert(0, str(Path(__file__).resolve().parent))

from approaches import KEYS, PARALLEL, EngineExecutor, functions
from corpus import DEFAULT_FOLDER, Corpus
from peers.sharp import SharpUnavailable, run_sharp
from procinfo import CpuMeter, cpu_count, process_tree, tree_cpu_seconds, vm_mb, wait_quiet
from ssim import luma, ssim

DISTURBED = 0.25  # cores used by other processes that make a round not count


@dataclass
class Approach:
    """One way of compressing the corpus, and what it measured."""

    key: str
    label: str
    kind: str  # sequential, threads, processes, node
    workers: int
    fn: Callable[[bytes], bytes | None] | None = None
    times: list[float] = field(default_factory=list)
    outputs: list[bytes | None] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    ssim_alpha: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # CPU seconds per round (NaN: not measured)

    def summary(self, corpus: Corpus, sharp_ips: float | None) -> dict[str, Any]:
        """Return the figures of this approach as a JSON-able dict."""
        median = statistics.median(self.times)
        ok = [i for i, out in enumerate(self.outputs) if out is not None]
        ips = len(corpus.data) / median
        return {
            "key": self.key,
            "label": self.label,
            "kind": self.kind,
            "workers": self.workers,
            "times_s": [round(t, 4) for t in self.times],
            "median_s": round(median, 4),
            "images_per_s": round(ips, 2),
            "mp_per_s": round(sum(corpus.megapixels) / median, 2),
            "cpu_ms_per_image": _round(1000 * statistics.median(self.cpu) / len(corpus.data)),
            "cores_busy": _round(statistics.median(self.cpu) / median),
            "vs_sharp": round(ips / sharp_ips, 3) if sharp_ips else None,
            "bytes_out_in": round(
                sum(len(self.outputs[i] or b"") for i in ok)
                / max(1, sum(len(corpus.data[i]) for i in ok)),
                4,
            ),
            "failures": len(corpus.data) - len(ok),
            "ssim": _mean(self.ssim),
            "ssim_alpha": _mean(self.ssim_alpha),
            "ssim_images": len(self.ssim) + len(self.ssim_alpha),
        }


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 2)


def _mean(values: Sequence[float]) -> float | None:
    good = [v for v in values if not math.isnan(v)]
    return round(statistics.fmean(good), 4) if good else None


@dataclass
class SharpPeer:
    """sharp's two variants, one node invocation (with its own warm-up) per round."""

    corpus: Corpus
    quality: int
    out_dir: Path
    approaches: list[Approach] = field(default_factory=list)

    def round(self) -> list[tuple[float, list[bytes | None]]]:
        """Time one round of each variant; return each one's time and outputs."""
        result = run_sharp(self.corpus.paths, 1, self.quality, self.out_dir)
        if not self.approaches:
            info = result["info"]
            self.approaches = [
                Approach(f"sharp-{i}", v["name"], "node", int(info["concurrency"]))
                for i, v in enumerate(result["variants"])
            ]
            self.approaches[0].label += f" [sharp {info['sharp']}]"
        found: list[tuple[float, list[bytes | None]]] = []
        for variant in result["variants"]:
            out = Path(variant["outDir"])
            outputs = [(out / f"{k}.jpg").read_bytes() for k in range(len(self.corpus.data))]
            found.append((variant["times"][0], list(outputs)))
        return found


def _one_round(
    a: Approach, pool: Executor | EngineExecutor | None, corpus: Corpus
) -> tuple[float, float, list[Any]]:
    """Return the round's wall time, CPU time (this process tree) and outputs."""
    assert a.fn is not None
    cpu = tree_cpu_seconds(os.getpid())
    start = time.perf_counter()
    if isinstance(pool, EngineExecutor):
        outputs = pool.compress_all(corpus.data)
    else:
        outputs = list(pool.map(a.fn, corpus.data) if pool else map(a.fn, corpus.data))
    elapsed = time.perf_counter() - start
    return elapsed, tree_cpu_seconds(os.getpid()) - cpu, outputs


def _time_rounds(
    approaches: list[Approach],
    corpus: Corpus,
    rounds: int,
    sharp: SharpPeer | None,
    quiet: float,
    quality: int,
) -> tuple[float, list[float], int]:
    """Run every approach ``rounds`` times, interleaved, after one warm-up round. A round
    during which other processes used more than DISTURBED cores is run again (at most
    2 x rounds times). Return the engine's largest pool process's peak RSS (MB), the
    other processes' load in each counted round, and how many rounds were discarded."""
    loads: list[float] = []
    discarded = 0
    with ExitStack() as stack:
        kinds: dict[str, Callable[[int], Executor]] = {
            "threads": ThreadPoolExecutor,
            "processes": ProcessPoolExecutor,
        }
        pools: dict[str, Executor | EngineExecutor | None] = {}
        for a in approaches:
            if a.key in PARALLEL:  # imgcompress in parallel: the engine's own Compressor
                pools[a.key] = stack.enter_context(EngineExecutor(a.kind, a.workers, quality))  # type: ignore[arg-type]
            elif a.kind in kinds:
                pools[a.key] = stack.enter_context(kinds[a.kind](a.workers))
            else:
                pools[a.key] = None
        attempt = 0
        while len(loads) < rounds:
            if attempt and quiet:
                wait_quiet(timeout=quiet)
            meter = CpuMeter()
            results = [_one_round(a, pools[a.key], corpus) for a in approaches]
            peer = sharp.round() if sharp is not None and attempt else []
            load = meter.other_load()
            attempt += 1
            if attempt == 1:
                continue  # the warm-up round: pools start, imports, page cache
            if load > DISTURBED and discarded < 2 * rounds:
                discarded += 1
                continue
            loads.append(load)
            peers = sharp.approaches if sharp is not None else []
            timed = [*results, *((t, math.nan, out) for t, out in peer)]
            for a, (elapsed, cpu, outputs) in zip([*approaches, *peers], timed, strict=True):
                a.times.append(elapsed)
                a.cpu.append(cpu)
                a.outputs = outputs
        engine_children = [  # the forkserver and the engine's pool processes it forked
            pid
            for pid in process_tree(os.getpid())
            if "multiprocessing.forkserver" in Path(f"/proc/{pid}/cmdline").read_text("latin-1")
        ]
        children_rss = max((vm_mb(pid) for pid in engine_children), default=0.0)
    return children_rss, loads, discarded


def _measure_quality(approaches: list[Approach], corpus: Corpus, sample: list[int]) -> None:
    for i in sample:
        reference = luma(corpus.data[i])
        with Image.open(io.BytesIO(corpus.data[i])) as im:
            transparent = im.has_transparency_data
        for a in approaches:
            out = a.outputs[i]
            value = math.nan if out is None else ssim(reference, luma(out))
            (a.ssim_alpha if transparent else a.ssim).append(value)


def run_benchmark(
    folder: Path = DEFAULT_FOLDER,
    rounds: int = 3,
    *,
    quality: int = 50,
    workers: int | None = None,
    keys: Sequence[str] = tuple(KEYS),
    sharp: bool = True,
    ssim_sample: int = 17,
    quiet: float = 30.0,
) -> dict[str, Any]:
    """Run the compress benchmark and return its JSON-able report."""
    meter = CpuMeter()
    corpus = Corpus.load(folder)
    workers = workers or cpu_count()
    fns = functions(quality)
    approaches = []
    for key in keys:
        name, kind = KEYS[key]
        n = 1 if kind == "sequential" else workers
        unit = "1 thread" if kind == "sequential" else f"{n} {kind}"
        approaches.append(Approach(key, f"{name}, {unit}", kind, n, fns[name]))
    sharp_note = "not requested"
    with tempfile.TemporaryDirectory(prefix="imgcompress-bench-") as tmp:
        peer = SharpPeer(corpus, quality, Path(tmp)) if sharp else None
        try:
            children_rss, loads, discarded = _time_rounds(
                approaches, corpus, rounds, peer, quiet, quality
            )
        except SharpUnavailable as exc:
            sharp_note, peer = f"skipped: {exc}", None
            for a in approaches:
                a.times.clear()
            children_rss, loads, discarded = _time_rounds(
                approaches, corpus, rounds, None, quiet, quality
            )
        if peer is not None and peer.approaches:
            approaches = peer.approaches + approaches
            sharp_note = "ran"
        _measure_quality(approaches, corpus, corpus.sample(ssim_sample))
    sharp_ips = None
    if approaches[0].kind == "node":
        sharp_ips = len(corpus.data) / statistics.median(approaches[0].times)
    rows = [a.summary(corpus, sharp_ips) for a in approaches]
    parallel = [r for r in rows if r["key"] in PARALLEL]
    best = max(parallel, key=lambda r: r["images_per_s"]) if parallel else None
    return {
        "benchmark": "compress",
        "machine": {
            "cpus": cpu_count(),
            "python": platform.python_version(),
            "pillow": PIL.__version__,
            "libjpeg": features.version("jpg"),
            "libjpeg_turbo": features.check_feature("libjpeg_turbo"),
        },
        "corpus": {
            "folder": str(corpus.folder),
            "images": len(corpus.data),
            "megapixels": round(sum(corpus.megapixels), 2),
            "bytes": sum(len(d) for d in corpus.data),
            "ssim_sample": [corpus.paths[i].name for i in corpus.sample(ssim_sample)],
        },
        "rounds": rounds,
        "quality": quality,
        "sharp": sharp_note,
        "approaches": rows,
        "best_parallel": best,
        "peak_rss_mb": {"benchmark": round(vm_mb(), 1), "engine_pool_process": round(children_rss)},
        "other_load_cores": meter.other_load(),
        "other_load_per_round": loads,
        "rounds_discarded_as_disturbed": discarded,
    }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(report: dict[str, Any]) -> None:
    """Print the report as a table."""
    c = report["corpus"]
    print(
        f"compress: {c['images']} images, {c['megapixels']} MP, {c['bytes'] / 1e6:.1f} MB from "
        f"{c['folder']}; quality {report['quality']}; median of {report['rounds']} rounds; "
        f"{report['machine']['cpus']} CPUs; sharp {report['sharp']}"
    )
    head = f"{'approach':<50} {'img/s':>6} {'MP/s':>6} {'vs sharp':>8} {'CPU ms':>6} {'cores':>5}"
    print(head + f" {'out/in':>6} {'SSIM Y':>6} {'SSIM a':>6} {'fail':>4}")
    for r in report["approaches"]:
        print(
            f"{r['label'][:50]:<50} {r['images_per_s']:>6.1f} {r['mp_per_s']:>6.1f} "
            f"{_fmt(r['vs_sharp'], '.2f'):>8} {_fmt(r['cpu_ms_per_image'], '.1f'):>6} "
            f"{_fmt(r['cores_busy'], '.2f'):>5} {r['bytes_out_in']:>6.3f} "
            f"{_fmt(r['ssim'], '.4f'):>6} {_fmt(r['ssim_alpha'], '.4f'):>6} {r['failures']:>4}"
        )
    best = report["best_parallel"]
    if best:
        print(f"best parallel: {best['label']}, {best['images_per_s']} img/s")
    rss = report["peak_rss_mb"]
    print(
        f"peak RSS: benchmark {rss['benchmark']} MB, largest engine pool process "
        f"{rss['engine_pool_process']} MB"
    )
    loads = ", ".join(f"{v:.2f}" for v in report["other_load_per_round"])
    print(
        f"other processes' load (cores): {report['other_load_cores']} overall; counted rounds "
        f"{loads}; {report['rounds_discarded_as_disturbed']} disturbed rounds run again"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, run, print, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (median reported)")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--quality", type=int, default=50)
    parser.add_argument("--workers", type=int, help="pool size (default: CPUs available)")
    parser.add_argument("--ssim-sample", type=int, default=17, help="images for SSIM; 0 = all")
    parser.add_argument("--no-sharp", action="store_true", help="skip the sharp comparison")
    parser.add_argument(
        "--quiet-wait", type=float, default=30.0, help="max s to wait for an idle machine per round"
    )
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(KEYS)}")
    args = parser.parse_args(argv)
    keys = args.only.split(",") if args.only else list(KEYS)
    unknown = set(keys) - set(KEYS)
    if unknown:
        parser.error(f"unknown approaches: {', '.join(sorted(unknown))}")
    report = run_benchmark(
        args.folder,
        args.rounds,
        quality=args.quality,
        workers=args.workers,
        keys=keys,
        sharp=not args.no_sharp,
        ssim_sample=args.ssim_sample,
        quiet=args.quiet_wait,
    )
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
