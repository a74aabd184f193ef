"""Summarise a py-spy ``--format raw`` profile of ``imgcompress serve`` by where time goes.

    .venv/bin/python benchmarks/profile_summary.py PROFILE.txt [--rate 200]

``benchmarks/pipeline.py --py-spy PROFILE.txt`` records one, the compression processes
included (py-spy samples only threads that are running, so a sample is CPU time, not
waiting). Each stack is put in the first
bucket whose marker it contains; the table gives samples, CPU seconds (samples / rate)
and the share of all samples, split by thread kind (event loop vs worker threads).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

# A stack whose innermost Python frame is one of these is a thread waiting, not working
# (py-spy's own idle detection misses some of them).
IDLE_LEAVES = (
    "Condition.wait (",
    "Runner.run (asyncio",
    "select (selectors",
    "EpollSelector.select (selectors",
    "_PollLikeSelector.select (selectors",
    "Event.wait (",
    "_worker (concurrent/futures/thread.py",
)
# (bucket, markers): the first bucket with a marker found in the stack wins. Only frames
# below the event loop's dispatch (asyncio/events.py) are looked at.
BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("startup (imports)", ("_find_and_load",)),
    ("compress: decode", ("load (PIL/ImageFile.py",)),
    ("compress: encode JPEG", ("JpegImagePlugin.py",)),
    ("compress: encode WebP", ("WebPImagePlugin.py",)),
    ("compress: other (exif_transpose copy, convert)", ("compress_image",)),
    ("store: SQLite", ("stores/sqlite.py", "stores/_sqlite")),
    ("status endpoint (query + JSON)", ("status (imgcompress_web", "to_document", "msgspec")),
    ("upload + CSV parsing", ("manifest.py", "upload (imgcompress_web")),
    ("download (fetch, httpx, httpcore)", ("imgcompress_core/fetch.py", "httpx/", "httpcore/")),
    ("HTTP server (uvicorn, litestar)", ("uvicorn/", "litestar/")),
    ("worker bookkeeping", ("imgcompress_core/worker.py",)),
    ("logging", ("logging/",)),
    ("event loop, threads (asyncio, anyio)", ("asyncio/", "anyio/", "threading.py")),
)


def _thread_kind(frames: list[str]) -> str:
    """Compression processes, the service's event loop, or its other threads.

    With ``--subprocesses`` a stack starts with its process chain (serve, then the
    forkserver, then the pool child), then ``thread (TID): NAME``; the main thread's TID
    is its process's PID (py-spy does not always name it MainThread).
    """
    processes = [f for f in frames if f.startswith("process ")]
    if any("multiprocessing.forkserver" in f for f in processes):
        return "compression processes"
    thread = next((f for f in frames if f.startswith("thread (")), "")
    pid = processes[-1].split(":", 1)[0].removeprefix("process ") if processes else ""
    main = "MainThread" in thread or thread.startswith(f"thread ({pid})")
    return "event loop" if main else "worker threads"


def summarise(path: Path) -> tuple[Counter[tuple[str, str]], int]:
    """Return samples per (bucket, thread kind) and the total."""
    counts: Counter[tuple[str, str]] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        samples = int(number)
        total += samples
        frames = stack.split(";")
        kind = _thread_kind(frames)
        dispatch = [i for i, f in enumerate(frames) if "(asyncio/events.py" in f]
        work = ";".join(frames[dispatch[-1] + 1 :] if dispatch else frames[1:])
        if frames[-1].startswith(IDLE_LEAVES):
            bucket = "idle (waiting for work or I/O)"
        else:
            bucket = next((b for b, marks in BUCKETS if any(m in work for m in marks)), "other")
        counts[(bucket, kind)] += samples
    return counts, total


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--rate", type=float, default=200, help="py-spy sampling rate (Hz)")
    args = parser.parse_args()
    counts, total = summarise(args.profile)
    print(f"{'where':<48} {'thread':<21} {'samples':>8} {'CPU s':>7} {'share':>6}")
    for (bucket, kind), samples in counts.most_common():
        share = 100 * samples / max(1, total)
        print(f"{bucket:<48} {kind:<21} {samples:>8} {samples / args.rate:>7.1f} {share:>5.1f}%")
    print(f"{'total':<48} {'':<21} {total:>8} {total / args.rate:>7.1f}")


if __name__ == "__main__":
    main()
