"""Soak run: many concurrent uploads while status is polled; count what went wrong.

    .venv/bin/python benchmarks/soak.py [--uploads 200] [--rows 20] [--clients 16]
                                        [--pollers 8] [--store sqlite|mongodb] [--json out.json]

Starts a loopback image server on the corpus and ``imgcompress serve`` on a fresh store
(exactly as ``pipeline.py`` does), then ``--clients`` concurrent clients upload
``--uploads`` CSVs of ``--rows`` products each (one image URL per row, every URL
distinct), while ``--pollers`` clients keep fetching the status of random accepted
requests. When every accepted request is final it prints:

- **5xx answers**: server errors on any call (uploads and polls); the goal is 0.
- **other errors**: transport errors and 4xx answers (the goal is 0: every call is valid).
- **lost rows**: rows sent in accepted uploads that the final status does not list, or
  lists in a state other than done/failed; the goal is 0.
- **failed images**: images that ended failed (the corpus images all compress, so 0).
- **upload latency p50/p95/max**, **status latency p50/p95**, and **peak RSS** of every
  process of the service's tree.

Not run in CI: it is a load test, minutes long on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import DEFAULT_FOLDER, Corpus
from pipeline import Stack, _pct
from procinfo import process_tree, vm_mb


class Tally:
    """Counts and timings shared by the clients."""

    def __init__(self) -> None:
        self.server_errors: list[str] = []
        self.other_errors: list[str] = []
        self.upload_s: list[float] = []
        self.status_s: list[float] = []
        self.accepted: dict[str, int] = {}  # requestId -> rows sent

    def answer(self, what: str, response: httpx.Response) -> bool:
        """Record a non-2xx answer; return True when it was 2xx."""
        if response.status_code >= 500:
            self.server_errors.append(f"{what}: {response.status_code} {response.text[:200]}")
        elif response.status_code >= 300:
            self.other_errors.append(f"{what}: {response.status_code} {response.text[:200]}")
        return response.is_success


def make_csv(base: str, names: list[str], upload: int, rows: int) -> bytes:
    """Return one upload's CSV: ``rows`` products, each with one distinct image URL."""
    lines = ["S. No.,Product Name,Input Image Urls"]
    for row in range(rows):
        name = names[(upload * rows + row) % len(names)]
        lines.append(f"{row + 1},U{upload}-R{row + 1},{base}/{name}?u={upload}&r={row}")
    return ("\n".join(lines) + "\n").encode()


async def uploader(
    client: httpx.AsyncClient, tally: Tally, jobs: asyncio.Queue[tuple[int, bytes]]
) -> None:
    """Upload CSVs from the queue until it is empty."""
    while not jobs.empty():
        upload, body = jobs.get_nowait()
        started = time.monotonic()
        try:
            response = await client.post(
                "/api/upload", files={"file": (f"soak-{upload}.csv", body, "text/csv")}
            )
        except httpx.HTTPError as exc:
            tally.other_errors.append(f"upload {upload}: {exc!r}")
            continue
        tally.upload_s.append(time.monotonic() - started)
        if tally.answer(f"upload {upload}", response):
            tally.accepted[response.json()["requestId"]] = body.count(b"\n") - 1


async def poller(client: httpx.AsyncClient, tally: Tally, stop: asyncio.Event) -> None:
    """Fetch the status of random accepted requests until told to stop."""
    while not stop.is_set():
        if not tally.accepted:
            await asyncio.sleep(0.05)
            continue
        request_id = random.choice(list(tally.accepted))
        started = time.monotonic()
        try:
            response = await client.get(f"/api/status/{request_id}")
        except httpx.HTTPError as exc:
            tally.other_errors.append(f"status {request_id}: {exc!r}")
            continue
        tally.status_s.append(time.monotonic() - started)
        tally.answer(f"status {request_id}", response)
        await asyncio.sleep(0.02)


async def settle(client: httpx.AsyncClient, tally: Tally, wait_s: float) -> dict[str, Any]:
    """Wait until every accepted request is final; return the lost and failed counts."""
    deadline = time.monotonic() + wait_s
    pending = set(tally.accepted)
    final: dict[str, dict[str, Any]] = {}
    while pending and time.monotonic() < deadline:
        for request_id in list(pending):
            response = await client.get(f"/api/status/{request_id}")
            if tally.answer(f"final status {request_id}", response):
                doc = response.json()
                if doc["status"] != "Pending":
                    final[request_id] = doc
                    pending.discard(request_id)
        if pending:
            await asyncio.sleep(0.5)
    lost = failed = 0
    for request_id, rows in tally.accepted.items():
        doc = final.get(request_id)
        if doc is None:
            lost += rows
            continue
        images = [i for p in doc["products"] for i in p["images"]]
        ended = [i for i in images if i["state"] in ("done", "failed")]
        lost += rows - len(ended)
        failed += sum(i["state"] == "failed" for i in images)
    return {"lost_rows": lost, "failed_images": failed, "not_final": len(pending)}


async def soak(base: str, csvs: list[bytes], args: argparse.Namespace, pid: int) -> dict[str, Any]:
    """Run the uploads and the pollers, then wait for the requests to finish."""
    tally = Tally()
    jobs: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for upload, body in enumerate(csvs):
        jobs.put_nowait((upload, body))
    stop = asyncio.Event()
    peak = 0.0

    async def sample_rss() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, sum(vm_mb(p, "VmRSS") for p in process_tree(pid)))
            await asyncio.sleep(0.2)

    limits = httpx.Limits(max_connections=args.clients + args.pollers + 2)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        started = time.monotonic()
        pollers = [asyncio.create_task(poller(client, tally, stop)) for _ in range(args.pollers)]
        sampler = asyncio.create_task(sample_rss())
        await asyncio.gather(*(uploader(client, tally, jobs) for _ in range(args.clients)))
        uploaded_s = time.monotonic() - started
        outcome = await settle(client, tally, args.timeout)
        finished_s = time.monotonic() - started
        stop.set()
        await asyncio.gather(*pollers, sampler)
    return {
        "uploads_sent": len(csvs),
        "uploads_accepted": len(tally.accepted),
        "rows_accepted": sum(tally.accepted.values()),
        "server_errors": len(tally.server_errors),
        "other_errors": len(tally.other_errors),
        "error_samples": (tally.server_errors + tally.other_errors)[:10],
        **outcome,
        "uploads_done_s": round(uploaded_s, 2),
        "all_final_s": round(finished_s, 2),
        "upload_p50_s": round(_pct(tally.upload_s, 0.5), 3),
        "upload_p95_s": round(_pct(tally.upload_s, 0.95), 3),
        "upload_max_s": round(max(tally.upload_s, default=0.0), 3),
        "status_calls": len(tally.status_s),
        "status_p50_s": round(_pct(tally.status_s, 0.5), 3),
        "status_p95_s": round(_pct(tally.status_s, 0.95), 3),
        "service_rss_sampled_peak_mb": round(peak, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the image server, the store and the service; soak; stop them; return the report."""
    corpus = Corpus.load(args.folder)
    names = sorted(p.name for p in corpus.paths)
    with tempfile.TemporaryDirectory(prefix="imgcompress-soak-") as tmp_name:
        tmp = Path(tmp_name)
        with Stack(corpus, tmp, store=args.store, extra_env=args.env) as stack:
            csvs = [make_csv(stack.images, names, u, args.rows) for u in range(args.uploads)]
            report = asyncio.run(soak(stack.base, csvs, args, stack.service.pid))
            rss = stack.peak_rss()
        report["service_exit_code"] = stack.service.returncode
    report["peak_rss_mb"] = {"processes": rss, "total": round(sum(rss.values()), 1)}
    return {"benchmark": "soak", "store": args.store, **vars_for_json(args), **report}


def vars_for_json(args: argparse.Namespace) -> dict[str, Any]:
    """Return the command-line settings worth keeping in the report."""
    return {k: getattr(args, k) for k in ("uploads", "rows", "clients", "pollers", "env")}


def print_report(r: dict[str, Any]) -> None:
    """Print the report as a table."""
    rows = [
        ("store", r["store"]),
        ("uploads accepted", f"{r['uploads_accepted']} of {r['uploads_sent']}"),
        ("rows accepted", r["rows_accepted"]),
        ("5xx answers", r["server_errors"]),
        ("other errors", r["other_errors"]),
        ("lost rows", r["lost_rows"]),
        ("failed images", r["failed_images"]),
        ("requests not final", r["not_final"]),
        ("uploads took", f"{r['uploads_done_s']} s"),
        ("all final after", f"{r['all_final_s']} s"),
        ("upload p50/p95/max", f"{r['upload_p50_s']}/{r['upload_p95_s']}/{r['upload_max_s']} s"),
        ("status calls", r["status_calls"]),
        ("status p50/p95", f"{r['status_p50_s']} / {r['status_p95_s']} s"),
        ("peak RSS (VmHWM)", f"{r['peak_rss_mb']['total']} MB {r['peak_rss_mb']['processes']}"),
        ("peak RSS sampled", f"{r['service_rss_sampled_peak_mb']} MB (service tree, every 0.2 s)"),
        ("service exit code", r["service_exit_code"]),
    ]
    for label, value in rows:
        print(f"{label:<20} {value}")
    for sample in r["error_samples"]:
        print(f"  {sample}")


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, run, print, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=200, help="CSVs to upload")
    parser.add_argument("--rows", type=int, default=20, help="products (images) per CSV")
    parser.add_argument("--clients", type=int, default=16, help="concurrent uploaders")
    parser.add_argument("--pollers", type=int, default=8, help="concurrent status pollers")
    parser.add_argument("--store", choices=("sqlite", "mongodb"), default="sqlite")
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER, help="images to serve")
    parser.add_argument("--timeout", type=float, default=1800, help="max s to wait for final")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra service env"
    )
    args = parser.parse_args(argv)
    report = run(args)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    bad = report["server_errors"] + report["lost_rows"] + report["not_final"]
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
