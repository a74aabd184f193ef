"""Benchmark a recurring feed: the same catalogue sent twice, 5 % of its images changed.

    .venv/bin/python benchmarks/feed.py [-n 1000] [--changed 0.05] [--json out.json]

A loopback image server serves the corpus from memory with an ETag per file and answers
``If-None-Match`` with 304; it counts requests, 304s and body bytes sent. A CSV of N
products, one image each, cycles through the corpus (``/NAME?i=K``: distinct URLs).
``imgcompress serve`` (SQLite, defaults, pacing off: one loopback server stands for many
hosts) runs the feed to Completed, then the server changes ``--changed`` of the images
(new bytes, new ETag), and the same CSV is uploaded again. Compressions are read from the
service's ``/metrics`` (``imgcompress_compress_seconds_count``), downloads from the
server's own counters. The goal (issue: recurring feeds): the second run at least 10x
faster, downloading at most 10 % of the bytes, compressing exactly the changed images.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import DEFAULT_FOLDER, Corpus
from pipeline import TYPES, free_port, start_service, wait_http
from procinfo import own_cpu_seconds, tree_cpu_seconds


class FeedServer:
    """Serves files with ETags from memory; counts what it sends."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)  # path -> body (one per product URL)
        # Computed once per body, as a real server derives its ETag from file metadata
        # instead of hashing the file on every request (which would load this machine).
        self.tags = {path: self.tag(body) for path, body in self.files.items()}
        self.requests = 0
        self.not_modified = 0
        self.body_bytes = 0
        self._lock = threading.Lock()
        feed = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                body = feed.files.get(self.path)
                with feed._lock:
                    feed.requests += 1
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                tag = feed.tags[self.path]
                if self.headers.get("If-None-Match") == tag:
                    with feed._lock:
                        feed.not_modified += 1
                    self.send_response(304)
                    self.send_header("ETag", tag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                kind = TYPES.get(Path(self.path.split("?", 1)[0]).suffix.lower(), "image/jpeg")
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("ETag", tag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                with feed._lock:
                    feed.body_bytes += len(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @staticmethod
    def tag(body: bytes) -> str:
        """Return the ETag of a body."""
        return f'"{hashlib.sha256(body).hexdigest()[:20]}"'

    def change(self, path: str, body: bytes) -> None:
        """Serve new bytes (so a new ETag) at ``path``."""
        self.files[path], self.tags[path] = body, self.tag(body)

    def counters(self) -> dict[str, int]:
        """Return the counters so far."""
        with self._lock:
            return {
                "requests": self.requests,
                "not_modified": self.not_modified,
                "body_bytes": self.body_bytes,
            }

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


def compressions(base: str) -> int:
    """Return how many images the service has compressed (from /metrics)."""
    for line in httpx.get(f"{base}/metrics", timeout=30).text.splitlines():
        if line.startswith("imgcompress_compress_seconds_count"):
            return int(float(line.split()[-1]))
    return 0


def run_once(base: str, csv: bytes, service: int) -> dict[str, Any]:
    """Upload, wait for the final status, return the wall time and counts.

    As in pipeline.py, the clock starts just before the upload and stops at the status
    document's ``finishedAt``, so the polling interval (0.25 s, light on the service)
    does not round the time up."""
    cpu_before = tree_cpu_seconds(service)
    serve_before, ours_before = own_cpu_seconds(service), time.process_time()
    with httpx.Client(base_url=base, timeout=120) as client:
        started = time.time()
        answer = client.post("/api/upload", files={"file": ("feed.csv", csv, "text/csv")})
        answer.raise_for_status()
        request_id = answer.json()["requestId"]
        while True:
            doc = client.get(f"/api/status/{request_id}?products=false").json()
            if doc["status"] != "Pending":
                break
            time.sleep(0.25)
        finished = datetime.fromisoformat(doc["finishedAt"].replace("Z", "+00:00"))
        seconds = finished.timestamp() - started
        cpu = tree_cpu_seconds(service) - cpu_before
        serve_cpu = own_cpu_seconds(service) - serve_before
        ours = time.process_time() - ours_before  # the image server and this client
        reused: dict[str, int] = {}
        cursor = 0
        while True:
            page = client.get(f"/api/status/{request_id}?limit=200&cursor={cursor}").json()
            for product in page["products"]:
                for image in product["images"]:
                    key = image["reused"] or "new"
                    reused[key] = reused.get(key, 0) + 1
            if "nextCursor" not in page:
                break
            cursor = page["nextCursor"]
    progress = doc["progress"]
    return {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "serve_cpu_seconds": round(serve_cpu, 2),
        "image_server_cpu_seconds": round(ours, 2),
        "status": doc["status"],
        "done": progress["done"],
        "failed": progress["failed"],
        "reused": reused,
    }


def profile(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """Start py-spy on the running service (the second run only), raw stacks to ``out``."""
    spy = Path(sys.executable).with_name("py-spy")
    command = [str(spy), "record", "--format", "raw", "--threads", "--rate", "200"]
    command += ["--pid", str(pid), "-o", str(out)]
    started = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy attaches before the upload
    return started


def run_feed(args: argparse.Namespace) -> dict[str, Any]:
    """Run the feed twice and return both runs' figures."""
    corpus = Corpus.load(Path(args.corpus))
    names = [p.name for p in corpus.paths]
    # Every product its own bytes (the photo plus a unique trailer after its end marker,
    # which decoders ignore), as in a real catalogue: nothing is shared on the first run.
    files = {
        f"/{names[i % len(names)]}?i={i}": corpus.data[i % len(names)] + b"\0feed%08d" % i
        for i in range(args.n)
    }
    server = FeedServer(files)
    lines = ["S. No.,Product Name,Input Image Urls"]
    lines += [f"{i + 1},SKU{i + 1},{server.base}{path}" for i, path in enumerate(files)]
    csv = ("\n".join(lines) + "\n").encode()
    with tempfile.TemporaryDirectory(prefix="imgcompress-feed-") as folder:
        tmp = Path(folder)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMGCOMPRESS_")}
        env.update(
            IMGCOMPRESS_DATABASE=str(tmp / "feed.sqlite3"),
            IMGCOMPRESS_ALLOW_PRIVATE_NETWORKS="true",
            IMGCOMPRESS_HOST="127.0.0.1",
            IMGCOMPRESS_PORT=str(port),
            IMGCOMPRESS_REQUESTS_PER_SECOND_PER_HOST="0",
        )
        env.update(item.split("=", 1) for item in args.env)
        log = tmp / "serve.log"
        service = start_service(env, log, None)
        try:
            wait_http(base, service, log)
            first = run_once(base, csv, service.pid)
            first |= server.counters() | {"compressions": compressions(base)}
            changed = sorted(files)[:: max(1, round(1 / args.changed))][
                : round(args.n * args.changed)
            ]
            for path in changed:  # new bytes (a changed trailer), so a new ETag
                files[path] = files[path] + b"\0changed"
                server.change(path, files[path])
            before = server.counters()
            compressed_before = first["compressions"]
            spy = profile(service.pid, args.py_spy) if args.py_spy else None
            second = run_once(base, csv, service.pid)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            after = server.counters()
            second |= {k: after[k] - before[k] for k in after}
            second["compressions"] = compressions(base) - compressed_before
        finally:
            service.send_signal(signal.SIGTERM)
            service.wait(60)
            server.stop()
    return {
        "images": args.n,
        "changed": len(changed),
        "first": first,
        "second": second,
        "speedup": round(first["seconds"] / max(second["seconds"], 1e-9), 1),
        "bytes_ratio": round(second["body_bytes"] / max(first["body_bytes"], 1), 4),
    }


def print_report(r: dict[str, Any]) -> None:
    """Print the two runs side by side."""
    print(f"feed of {r['images']} images, {r['changed']} changed before the second run")
    print(
        "| run | seconds | service CPU s (`serve` alone) | image server CPU s "
        "| downloads (200) | 304 | body bytes | compressions | reused |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in ("first", "second"):
        run = r[name]
        fetched = run["requests"] - run["not_modified"]
        print(
            f"| {name} | {run['seconds']} | {run['cpu_seconds']} ({run['serve_cpu_seconds']}) "
            f"| {run['image_server_cpu_seconds']} | {fetched} | "
            f"{run['not_modified']} | "
            f"{run['body_bytes']:,} | {run['compressions']} | {run['reused']} |"
        )
    cpu = r["first"]["cpu_seconds"] / max(r["second"]["cpu_seconds"], 1e-9)
    print(
        f"second run {r['speedup']}x faster ({cpu:.1f}x less service CPU); "
        f"downloaded bytes {100 * r['bytes_ratio']:.1f} %"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, run, print, and write JSON when asked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="products (one image each)")
    parser.add_argument("--changed", type=float, default=0.05, help="share changed (0.05)")
    parser.add_argument("--corpus", default=str(DEFAULT_FOLDER))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra service env"
    )
    parser.add_argument(
        "--py-spy", type=Path, help="profile the service during the second run (raw stacks)"
    )
    args = parser.parse_args(argv)
    result = run_feed(args)
    print_report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
