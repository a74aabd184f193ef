"""CPU per download through the service's fetcher, under each heap setting of ``serve``.

    .venv/bin/python benchmarks/downloads.py [-n 600] [--rounds 2] [--folder DIR]

A loopback HTTP/1.1 server in its own process serves the corpus's JPEGs from memory; this
process downloads N of them (8 at a time, distinct URLs) through ``HttpxFetcher`` with
no pacing, hashes each body as the service does, and reports its own user and system CPU
per download. Each variant runs in a fresh interpreter with glibc's malloc tuned through
its environment, as ``imgcompress_core.heap.lean_service_heap`` tunes ``serve``:
``default`` (glibc alone), ``256k`` (the fixed 256 KiB mmap threshold ``serve`` used
before) and ``serve`` (today's settings, read from ``heap``). Variants alternate, round
after round, so a machine whose speed drifts affects them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import DEFAULT_FOLDER, Corpus

SERVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
bodies = {"/" + p.name: p.read_bytes() for p in map(Path, sys.argv[1:])}
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = bodies[self.path.split("?")[0]]
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def variants() -> dict[str, dict[str, str]]:
    """The malloc environment of each variant."""
    from imgcompress_core import heap

    return {
        "default": {},
        "256k": {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": str(256 * 1024)},
        "serve": {
            "MALLOC_ARENA_MAX": str(heap.SERVICE_ARENAS),
            "MALLOC_MMAP_THRESHOLD_": str(heap.SERVICE_MMAP_THRESHOLD),
            "MALLOC_TRIM_THRESHOLD_": str(heap.SERVICE_TRIM_THRESHOLD),
        },
    }


async def download(port: int, names: list[str], n: int) -> dict[str, float]:
    """Download ``n`` URLs, 8 at a time; return CPU ms per download (after a warm-up)."""
    from imgcompress_core.fetch import FetchOptions, HttpxFetcher

    fetcher = HttpxFetcher(
        FetchOptions(
            allow_private_networks=True, connections_per_host=8, requests_per_second_per_host=0
        )
    )
    gate = asyncio.Semaphore(8)
    received = 0

    async def one(i: int) -> None:
        nonlocal received
        async with gate:
            fetched = await fetcher.fetch(f"http://127.0.0.1:{port}/{names[i % len(names)]}?i={i}")
            hashlib.sha256(fetched.data).hexdigest()
            received += len(fetched.data)

    await asyncio.gather(*(one(-1 - i) for i in range(40)))  # connections and imports
    received = 0
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - started
    return {
        "user_ms": (after.ru_utime - before.ru_utime) / n * 1000,
        "sys_ms": (after.ru_stime - before.ru_stime) / n * 1000,
        "faults": (after.ru_minflt - before.ru_minflt) / n,
        "wall_ms": wall / n * 1000,
        "kb": received / n / 1000,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-n", type=int, default=600, help="downloads per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # port,name,name,... (one run)
    args = parser.parse_args(argv)
    if args.child:
        port, *names = args.child.split(",")
        print(json.dumps(asyncio.run(download(int(port), names, args.n))))
        return
    corpus = Corpus.load(args.folder)
    jpegs = [p for p in corpus.paths if p.suffix.lower() in (".jpg", ".jpeg")]
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, *map(str, jpegs)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        child = ",".join([str(port), *(p.name for p in jpegs)])
        rows: dict[str, list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for name, env in variants().items():
                out = subprocess.run(
                    [sys.executable, __file__, "-n", str(args.n), "--child", child],
                    env={**os.environ, **env},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rows.setdefault(name, []).append(json.loads(out.stdout))
    finally:
        server.kill()
    print(f"{args.n} downloads per run, {len(jpegs)} corpus JPEGs, 8 at a time, loopback")
    print("| malloc | user ms | sys ms | CPU ms per download | minor faults | KB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, runs in rows.items():
        user = " / ".join(f"{r['user_ms']:.2f}" for r in runs)
        system = " / ".join(f"{r['sys_ms']:.2f}" for r in runs)
        total = " / ".join(f"{r['user_ms'] + r['sys_ms']:.2f}" for r in runs)
        faults = " / ".join(f"{r['faults']:.0f}" for r in runs)
        print(f"| {name} | {user} | {system} | {total} | {faults} | {runs[0]['kb']:.0f} |")


if __name__ == "__main__":
    main()
