"""Responses stay bounded however large a request is (issue: hardening, finding 4): a
500,000-image request (no worker running) is polled by four clients at once, cancelled and
its output CSV downloaded, and the service's memory grows by less than 50 MB."""

from __future__ import annotations

import csv
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from procs import ServiceProcess, env_for, free_port

ROWS, URLS_PER_ROW = 10_000, 50


def rss_bytes(pid: int) -> int:
    """Return a process's resident set size."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class PeakRss:
    """Samples a process's RSS every 20 ms in a thread and keeps the highest."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def big_csv() -> bytes:
    """10,000 rows of 50 image URLs each: 500,000 images."""
    out = io.StringIO()
    out.write("S. No.,Product Name,Input Image Urls\n")
    for row in range(ROWS):
        urls = ",".join(f"http://img.example/{row * URLS_PER_ROW + k}.jpg" for k in range(50))
        out.write(f'{row + 1},SKU{row + 1},"{urls}"\n')
    return out.getvalue().encode()


@pytest.mark.slow
def test_a_500000_image_request_is_served_at_bounded_memory(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    """Four concurrent status polls each answer within 5 s with one page; the DELETE
    answers with one page; the output CSV streams; RSS grows by under 50 MB."""
    port = free_port()
    env = env_for(tmp_path) | {"IMGCOMPRESS_MAX_UPLOAD_BYTES": str(32 * 1024 * 1024)}
    serve = ServiceProcess(
        ["serve", "--port", str(port), "--no-run-worker"], env, tmp_path / "serve.log"
    )
    services.append(serve)
    base = f"http://127.0.0.1:{port}"
    serve.wait_http(base)
    with httpx.Client(base_url=base, timeout=300) as client:
        answer = client.post("/api/upload", files={"file": ("big.csv", big_csv(), "text/csv")})
        assert answer.status_code == 202, answer.text
        request_id = answer.json()["requestId"]
        first = client.get(f"/api/status/{request_id}").json()  # warm up the code paths
        assert first["progress"]["total"] == ROWS * URLS_PER_ROW
        assert len(first["products"]) == 100 and first["nextCursor"] == 101
        before = rss_bytes(serve.process.pid)

        def poll(cursor: int) -> float:
            started = time.monotonic()
            page = client.get(f"/api/status/{request_id}?cursor={cursor}&limit=200")
            assert page.status_code == 200
            assert len(page.json()["products"]) == 200
            return time.monotonic() - started

        with PeakRss(serve.process.pid) as rss:
            with ThreadPoolExecutor(4) as pool:
                took = list(pool.map(poll, [1, 2001, 4001, 6001]))
            cancelled = client.delete(f"/api/requests/{request_id}")
            assert cancelled.status_code == 200
            assert cancelled.json()["status"] == "Failed"
            assert len(cancelled.json()["products"]) == 100
            lines = 0
            with client.stream("GET", f"/api/requests/{request_id}/output.csv") as out:
                assert out.status_code == 200
                for line in out.iter_lines():
                    lines += 1 if line else 0
        assert lines == ROWS + 1
        assert max(took) < 5, f"status pages took {took} s"
    growth = rss.peak - before
    assert growth < 50 * 1024 * 1024, f"RSS grew by {growth / 2**20:.0f} MB"


def test_status_pages_walk_every_product_once(tmp_path: Path) -> None:
    """Following nextCursor visits every product exactly once, in row order."""
    from litestar.testing import TestClient

    from imgcompress_core import Settings
    from imgcompress_web.app import create_app

    settings = Settings(database=tmp_path / "s.sqlite3", run_worker=False)
    rows = "\n".join(f"{n},P{n},http://img.example/{n}.jpg" for n in range(1, 251))
    body = f"S. No.,Product Name,Input Image Urls\n{rows}\n".encode()
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as client:
        request_id = client.post("/api/upload", files={"file": ("a.csv", body)}).json()["requestId"]
        seen: list[int] = []
        cursor = 0
        while True:
            page = client.get(f"/api/status/{request_id}?limit=100&cursor={cursor}").json()
            seen += [p["row"] for p in page["products"]]
            if "nextCursor" not in page:
                break
            cursor = page["nextCursor"]
        assert seen == list(range(2, 252))
        bad = client.get(f"/api/status/{request_id}?limit=5000")
        assert bad.status_code == 400
        out = client.get(f"/api/requests/{request_id}/output.csv")
        assert out.status_code == 409  # Pending: nothing streamed
    assert list(csv.reader(io.StringIO("a,b\n"))) == [["a", "b"]]
