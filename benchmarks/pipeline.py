"""Benchmark the whole job: upload a CSV to a real ``imgcompress serve``, wait for Completed.

    .venv/bin/python benchmarks/pipeline.py [-n 1000] [--store sqlite|mongodb] [--json out.json]
        [--blob-url file|moto|URL]

In one process tree: first the compress benchmark's parallel approaches on the corpus
(the reference rate, same run, same images), then a loopback image server serving the
corpus from memory (HTTP/1.1 keep-alive), a CSV of N distinct URLs cycling through the
corpus (``/NAME?i=K``, one image per product row; each URL's body ends with its own
trailer after the image, so no two have the same bytes and none is reused), and
``imgcompress serve`` as a subprocess on a free port with a fresh store in a temp dir.
The clock starts just before the upload POST and stops at the status document's
``finishedAt``.

Per-image latency: the status document has no per-image timestamps, so the benchmark
polls it every ``--poll`` seconds (0.25) and takes, for each image, the time from the
upload until the poll that first sees it done or failed (so it is rounded up to the poll
interval, and the polling itself costs the service some CPU, reported as status GET time).

``--blob-url`` keeps the processed images outside the database (``IMGCOMPRESS_BLOB_URL``):
``file`` is a directory in the run's temp dir, ``moto`` starts moto's S3 server in this
process on loopback (its CPU counts as the benchmark's, not the service's) with a fresh
bucket, and anything else is passed through (a real bucket: credentials from AWS_*).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from approaches import PARALLEL
from compress import run_benchmark
from corpus import DEFAULT_FOLDER, Corpus
from imageserver import ImageServer
from procinfo import (
    CpuMeter,
    TreeMemorySampler,
    process_name,
    process_tree,
    tree_cpu_seconds,
    vm_mb,
    wait_quiet,
)

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).with_name("imgcompress")
TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


def free_port() -> int:
    """Return a free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def image_server(corpus: Corpus, distinct: bool = True) -> ImageServer:
    """Serve the corpus files from memory on a free loopback port (``imageserver``).

    ``distinct``: every ``?i=K`` gets its own bytes (the file plus a trailer after its end,
    which decoders ignore), so the service cannot reuse one URL's output for another.
    """
    files = {
        f"/{p.name}": (data, TYPES.get(p.suffix.lower(), "application/octet-stream"))
        for p, data in zip(corpus.paths, corpus.data, strict=True)
    }
    return ImageServer(files, distinct=distinct)


def make_csv(base: str, names: list[str], n: int) -> bytes:
    """Return a CSV of ``n`` products, one distinct image URL each, cycling through names."""
    lines = ["S. No.,Product Name,Input Image Urls"]
    lines += [f"{i + 1},SKU{i + 1},{base}/{names[i % len(names)]}?i={i}" for i in range(n)]
    return ("\n".join(lines) + "\n").encode()


def start_mongo(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start nx-27017 exactly as the tests do (``tests/mongo_server.py``); return it, a URI."""
    sys.path.insert(0, str(ROOT / "tests"))  # as pytest's rootdir conftest sees it
    from mongo_server import start_stand_in

    process, uri = start_stand_in(tmp)
    return process, f"{uri.rstrip('/')}/imgcompress_bench"


def start_service(env: dict[str, str], log: Path, py_spy: Path | None) -> subprocess.Popen[bytes]:
    """Start ``imgcompress serve`` (under py-spy when asked) writing to ``log``."""
    command = [str(EXE), "serve"]
    if py_spy is not None:
        spy = Path(sys.executable).with_name("py-spy")
        command = [str(spy), "record", "--format", "raw", "--threads", "--subprocesses"]
        command += ["-o", str(py_spy)]
        command += ["--rate", "200", "--", str(EXE), "serve"]
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def wait_http(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until /health answers, or exit with the service's log."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the service did not answer in 60 s:\n{log.read_text()}")


class Stack:
    """A loopback image server on a corpus, the store, and ``imgcompress serve`` on a free
    port, all in ``tmp``; used as a context manager that stops them all."""

    def __init__(
        self,
        corpus: Corpus,
        tmp: Path,
        *,
        store: str,
        extra_env: Sequence[str] = (),
        mongodb_uri: str | None = None,
        py_spy: Path | None = None,
        blob_url: str | None = None,
        distinct: bool = True,
    ) -> None:
        self.server = image_server(corpus, distinct)
        self.images = f"http://127.0.0.1:{self.server.server_address[1]}"
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMGCOMPRESS_")}
        env.update(
            IMGCOMPRESS_DATABASE=str(tmp / "bench.sqlite3"),
            IMGCOMPRESS_ALLOW_PRIVATE_NETWORKS="true",
            IMGCOMPRESS_HOST="127.0.0.1",
            IMGCOMPRESS_PORT=str(port),
            # One loopback server stands for many image hosts: no polite pacing.
            IMGCOMPRESS_REQUESTS_PER_SECOND_PER_HOST="0",
        )
        env.update(item.split("=", 1) for item in extra_env)
        self.moto: Any = None
        self.blob_url = self._blob_url(blob_url, tmp, env)
        if self.blob_url:
            env["IMGCOMPRESS_BLOB_URL"] = self.blob_url
        self.mongo: subprocess.Popen[bytes] | None = None
        if store == "mongodb" and mongodb_uri:  # a real MongoDB, a fresh database
            database = f"imgcompress_bench_{os.getpid()}_{int(time.time())}"
            env["IMGCOMPRESS_MONGODB_URI"] = f"{mongodb_uri.rstrip('/')}/{database}"
        elif store == "mongodb":
            self.mongo, env["IMGCOMPRESS_MONGODB_URI"] = start_mongo(tmp)
        self.py_spy = py_spy
        self.log = tmp / "serve.log"
        self.service = start_service(env, self.log, py_spy)

    def _blob_url(self, blob_url: str | None, tmp: Path, env: dict[str, str]) -> str | None:
        """Resolve ``--blob-url``: a directory in ``tmp``, a moto server started here, or
        the URL as given."""
        if blob_url == "file":
            return f"file://{tmp / 'blobs'}"
        if blob_url != "moto":
            return blob_url
        import logging

        import boto3
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        port = free_port()
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.moto.start()
        endpoint = f"http://127.0.0.1:{port}"
        credentials = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        ).create_bucket(Bucket="imgcompress-bench")
        env.update(credentials, AWS_REGION="us-east-1")
        return f"s3://imgcompress-bench/out?endpoint={endpoint}&region=us-east-1"

    def __enter__(self) -> Stack:
        wait_http(self.base, self.service, self.log)
        return self

    def __exit__(self, *exc: object) -> None:
        self.service.send_signal(signal.SIGINT if self.py_spy else signal.SIGTERM)
        self.service.wait(60)
        if self.mongo is not None:
            self.mongo.terminate()
            self.mongo.wait(30)
        self.server.shutdown()
        if self.moto is not None:
            self.moto.stop()

    def peak_rss(self) -> dict[str, float]:
        """VmHWM (MB) of every service process (and the MongoDB stand-in), by pid and name."""
        procs = [p for p in process_tree(self.service.pid) if "py-spy" not in process_name(p)]
        if self.mongo is not None:
            procs.append(self.mongo.pid)
        return {f"{pid} {process_name(pid)}": round(vm_mb(pid), 1) for pid in procs}


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def full_status(client: httpx.Client, request_id: str) -> dict[str, Any]:
    """Return the status document with every product: the API pages them (200 at most per
    page, ``nextCursor`` to go on), so read page after page."""
    doc: dict[str, Any] = client.get(f"/api/status/{request_id}?limit=200").json()
    products = list(doc["products"])
    while doc.get("nextCursor") is not None:
        doc = client.get(f"/api/status/{request_id}?limit=200&cursor={doc['nextCursor']}").json()
        products += doc["products"]
    doc["products"] = products
    return doc


def run_job(
    base: str,
    csv: bytes,
    poll: float,
    detail_every: float,
    tree_root: int,
    memory_every: float | None = 0.2,
) -> dict[str, Any]:
    """Upload, poll until final, and return the timings and the final document.

    Every ``poll`` s the cheap summary (``?products=false``) says whether the request is
    final; every ``detail_every`` s the full document says which images have finished
    (the per-image latency, to that resolution); every ``memory_every`` s the service
    tree's memory is sampled (None: not sampled, the memory fields are left out).
    """
    seen: dict[str, float] = {}
    status_times: list[float] = []
    detail_times: list[float] = []
    with (
        httpx.Client(base_url=base, timeout=120) as client,
        TreeMemorySampler(tree_root, memory_every) as memory,
    ):
        service_cpu0, own0 = tree_cpu_seconds(tree_root), time.process_time()
        start = time.time()
        answer = client.post("/api/upload", files={"file": ("bench.csv", csv, "text/csv")})
        upload_s = time.time() - start
        answer.raise_for_status()
        request_id = answer.json()["requestId"]
        next_detail = start + detail_every
        while True:
            time.sleep(poll)
            asked = time.time()
            final = client.get(f"/api/status/{request_id}?products=false").json()
            status_times.append(time.time() - asked)
            if final["status"] == "Pending" and asked < next_detail:
                continue
            asked = time.time()
            doc = full_status(client, request_id)
            detail_times.append(time.time() - asked)
            next_detail = asked + detail_every
            for product in doc["products"]:
                for image in product["images"]:
                    if image["state"] in ("done", "failed"):
                        seen.setdefault(image["imageId"], asked - start)
            if doc["status"] != "Pending":
                break
        service_cpu = tree_cpu_seconds(tree_root) - service_cpu0
        own_cpu = time.process_time() - own0
    images = [i for p in doc["products"] for i in p["images"]]
    done = [i for i in images if i["state"] == "done"]
    latencies = list(seen.values())
    return {
        "request_id": request_id,
        "status": doc["status"],
        "upload_s": round(upload_s, 4),
        "elapsed_s": round(_epoch(doc["finishedAt"]) - start, 3),
        "completed_seen_s": round(time.time() - start, 3),
        "images": len(images),
        "done": len(done),
        "failed": len(images) - len(done),
        "errors": sorted({i["error"]["code"] for i in images if i["error"]}),
        "failure_reasons": dict(
            Counter(
                f"{i['error']['code']}: {i['error']['message'][:160]}" for i in images if i["error"]
            ).most_common(8)
        ),
        "bytes_out_in": round(
            sum(i["outputBytes"] for i in done) / max(1, sum(i["inputBytes"] for i in done)), 4
        ),
        "latency_p50_s": round(_pct(latencies, 0.5), 3),
        "latency_p95_s": round(_pct(latencies, 0.95), 3),
        "polls": len(status_times),
        "status_get_mean_s": round(sum(status_times) / max(1, len(status_times)), 4),
        "detail_polls": len(detail_times),
        "detail_get_mean_s": round(sum(detail_times) / max(1, len(detail_times)), 4),
        "service_cpu_s": round(service_cpu, 2),
        "benchmark_cpu_s": round(own_cpu, 2),
    } | ({} if memory_every is None else memory.report())


def run_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    """Run the reference compress benchmark, then the job; return the report."""
    reference = run_benchmark(
        args.folder, args.rounds, keys=PARALLEL, sharp=False, ssim_sample=-1, quiet=args.quiet_wait
    )
    best = reference["best_parallel"]
    compress_phase_rss = vm_mb()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the job phase is measured alone
    corpus = Corpus.load(args.folder)
    names = sorted(p.name for p in corpus.paths)
    with tempfile.TemporaryDirectory(prefix="imgcompress-pipeline-") as tmp_name:
        tmp = Path(tmp_name)
        stack = Stack(
            corpus,
            tmp,
            store=args.store,
            extra_env=args.env,
            mongodb_uri=args.mongodb_uri,
            py_spy=args.py_spy,
            blob_url=args.blob_url,
        )
        with stack:
            wait_quiet(timeout=args.quiet_wait)
            meter = CpuMeter()
            csv = make_csv(stack.images, names, args.n)
            detail_every = args.detail_every or (2.0 if args.n <= 2000 else 30.0)
            job = run_job(stack.base, csv, args.poll, detail_every, stack.service.pid)
            # Before the service stops: its forkserver's CPU leaves the tree when it exits.
            other_load = meter.other_load()
            rss = stack.peak_rss()
        if args.log:
            shutil.copyfile(stack.log, args.log)
        if job["failed"]:
            reasons = "\n".join(f"  {n} x {why}" for why, n in job["failure_reasons"].items())
            print(f"warning: {job['failed']} images failed:\n{reasons}")
        store = [f for f in tmp.rglob("*") if f.is_file() and f.name != "serve.log"]
        store_mb = sum(f.stat().st_size for f in store) / 1e6
    ips = job["images"] / job["elapsed_s"]
    return {
        "benchmark": "pipeline",
        "n": args.n,
        "store": args.store,
        "blob_url": stack.blob_url,
        "corpus": reference["corpus"],
        "machine": reference["machine"],
        "reference": {k: best[k] for k in ("label", "images_per_s", "times_s")},
        "images_per_s": round(ips, 2),
        "efficiency": round(ips / best["images_per_s"], 3),
        **job,
        "peak_rss_mb": {
            "service_processes": rss,
            "service_total": round(sum(rss.values()), 1),
            "benchmark_job_phase": round(vm_mb(), 1),
            "benchmark_compress_phase": round(compress_phase_rss, 1),
        },
        "store_file_mb": round(store_mb, 1),
        "other_load_cores": other_load,
        "profile": str(args.py_spy) if args.py_spy else None,
        "service_env": args.env,
    }


def print_report(r: dict[str, Any]) -> None:
    """Print the report as a table."""
    rss = r["peak_rss_mb"]
    cores = r["service_cpu_s"] / r["completed_seen_s"]
    rows = [
        (
            "images",
            f"{r['images']} ({r['done']} done, {r['failed']} failed), store {r['store']}"
            f", blobs {r['blob_url'] or 'in the store'}",
        ),
        ("status", r["status"]),
        ("upload answered in", f"{r['upload_s'] * 1000:.0f} ms"),
        ("upload -> finishedAt", f"{r['elapsed_s']:.2f} s"),
        ("pipeline images/s", f"{r['images_per_s']:.1f}"),
        ("reference images/s", f"{r['reference']['images_per_s']} ({r['reference']['label']})"),
        ("efficiency", f"{r['efficiency']:.3f}"),
        ("latency p50 / p95", f"{r['latency_p50_s']:.2f} s / {r['latency_p95_s']:.2f} s"),
        ("bytes out/in", f"{r['bytes_out_in']:.3f}"),
        ("summary GET mean", f"{r['status_get_mean_s'] * 1000:.1f} ms over {r['polls']} polls"),
        (
            "full status GET mean",
            f"{r['detail_get_mean_s'] * 1000:.0f} ms over {r['detail_polls']} polls",
        ),
        ("peak RSS service", f"{rss['service_total']} MB {rss['service_processes']}"),
        (
            "service at one moment",
            f"{r['service_rss_sampled_peak_mb']} MB RSS, {r['service_pss_sampled_peak_mb']} MB"
            " PSS (sampled peaks of the sums)",
        ),
        ("PSS at that moment", f"{r['service_pss_at_peak_mb']}"),
        ("peak PSS, each", f"{r['service_pss_peak_each_mb']}"),
        ("peak RSS benchmark", f"{rss['benchmark_job_phase']} MB (job phase)"),
        ("store files", f"{r['store_file_mb']} MB"),
        ("service CPU", f"{r['service_cpu_s']} s = {cores:.2f} cores busy on average"),
        ("benchmark process CPU", f"{r['benchmark_cpu_s']} s (image server, polling)"),
        ("other processes' load", f"{r['other_load_cores']} cores"),
    ]
    for label, value in rows:
        print(f"{label:<24} {value}")


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, run, print, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="image URLs in the CSV")
    parser.add_argument("--store", choices=("sqlite", "mongodb"), default="sqlite")
    parser.add_argument(
        "--mongodb-uri",
        help="with --store mongodb: use this MongoDB (no database in the URI) instead of the"
        " nx-27017 stand-in; the run's database is left behind for you to drop",
    )
    parser.add_argument(
        "--blob-url",
        help="keep the images outside the database: file (a temp directory), moto (moto's S3"
        " server started here) or an IMGCOMPRESS_BLOB_URL",
    )
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER, help="images to serve")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the reference benchmark")
    parser.add_argument("--poll", type=float, default=0.25, help="summary poll interval, s")
    parser.add_argument(
        "--detail-every",
        type=float,
        help="full status document interval, s (default: 2, or 30 above 2,000 images: the "
        "paged document of a 10,000-image request costs the service 2-3.5 s a read)",
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=30.0, help="max s to wait for an idle machine"
    )
    parser.add_argument("--log", type=Path, help="copy the service's log here")
    parser.add_argument("--py-spy", type=Path, help="profile the service with py-spy into FILE")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra service env"
    )
    args = parser.parse_args(argv)
    report = run_pipeline(args)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
