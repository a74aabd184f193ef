"""Fault injection on a real `imgcompress serve`: SIGKILL and SIGTERM at bad moments.

After a restart every image must end in exactly one final state, each stored image
exactly once, and the webhook must arrive (at least once, always with the same id).
Runs on SQLite and on MongoDB.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest
from test_scale_out import stored_images

from procs import ServiceProcess, descendants, env_for, free_port, still_running, wait_final
from servers import LocalServer, photo

IMAGES = 60


def upload(base: str, image_server: LocalServer, webhook: str) -> str:
    """Upload 20 products with 3 images each; return the request id."""
    for n in range(6):
        image_server.add(f"/f{n}.jpg", photo(320, 240, seed=n))
    lines = ["S. No.,Product Name,Input Image Urls"]
    for row in range(IMAGES // 3):
        urls = [image_server.url(f"/f{(row + k) % 6}.jpg?n={row}-{k}") for k in range(3)]
        lines.append(f'{row + 1},P{row},"{",".join(urls)}"')
    response = httpx.post(
        f"{base}/api/upload",
        files={"file": ("f.csv", ("\n".join(lines) + "\n").encode(), "text/csv")},
        data={"webhook_url": webhook},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["requestId"])


class Restartable:
    """`imgcompress serve` on a fixed port and store, started again after each fault."""

    def __init__(
        self, tmp_path: Path, services: list[ServiceProcess], uri: str | None, cpu: int = 1
    ) -> None:
        self.tmp_path = tmp_path
        self.services = services
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = env_for(tmp_path)
        self.env.update(IMGCOMPRESS_LEASE_SECONDS="2", IMGCOMPRESS_CPU_WORKERS=str(cpu))
        if uri:
            self.env["IMGCOMPRESS_MONGODB_URI"] = uri
        self.runs = 0

    def start(self) -> ServiceProcess:
        """Start serve (again) and wait until it answers."""
        self.runs += 1
        service = ServiceProcess(
            ["serve", "--port", str(self.port)], self.env, self.tmp_path / f"serve{self.runs}.log"
        )
        self.services.append(service)
        service.wait_http(self.base)
        return service


def check_outcome(
    serve: Restartable,
    request_id: str,
    webhook_receiver: LocalServer,
    store: tuple[str, str | None],
) -> None:
    """Every image done once, stored once; the webhook arrived with one stable id."""
    final = wait_final(serve.base, request_id, timeout=120)
    assert final["status"] == "Completed"
    states = [i["state"] for p in final["products"] for i in p["images"]]
    assert states == ["done"] * IMAGES
    stored, blobs = stored_images(serve.tmp_path, store[0], store[1])
    assert stored == IMAGES
    assert blobs == 6  # six distinct photos: identical outputs are stored once
    deadline = time.monotonic() + 30
    while not webhook_receiver.posts() and time.monotonic() < deadline:
        time.sleep(0.1)
    posts = webhook_receiver.posts()
    assert posts, "the webhook never arrived"
    assert {p.headers["webhook-id"] for p in posts} == {posts[0].headers["webhook-id"]}
    assert all(p.json()["requestId"] == request_id for p in posts)


@pytest.mark.slow
def test_sigkill_right_after_202(
    tmp_path: Path,
    services: list[ServiceProcess],
    image_server: LocalServer,
    webhook_receiver: LocalServer,
    store: tuple[str, str | None],
) -> None:
    """Killed the moment it accepted an upload, the restarted service does all the work."""
    serve = Restartable(tmp_path, services, store[1])
    first = serve.start()
    request_id = upload(serve.base, image_server, webhook_receiver.url("/hook"))
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    serve.start()
    check_outcome(serve, request_id, webhook_receiver, store)


@pytest.mark.slow
def test_sigkill_mid_processing(
    tmp_path: Path,
    services: list[ServiceProcess],
    image_server: LocalServer,
    webhook_receiver: LocalServer,
    store: tuple[str, str | None],
) -> None:
    """Killed with images in flight, the restarted service takes them over after their lease,
    and the killed one's compression processes exit instead of lingering as orphans."""
    serve = Restartable(tmp_path, services, store[1])
    first = serve.start()
    request_id = upload(serve.base, image_server, webhook_receiver.url("/hook"))
    deadline = time.monotonic() + 60
    while True:
        progress = httpx.get(f"{serve.base}/api/status/{request_id}", timeout=30).json()
        if progress["progress"]["done"] >= 5:
            break
        assert time.monotonic() < deadline, "no progress before the kill"
        time.sleep(0.05)
    pool = descendants(first.process.pid)  # the forkserver and the compression processes
    assert pool, "serve should compress in worker processes"
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    assert progress["progress"]["finished"] < IMAGES, "the kill came too late to prove anything"
    assert still_running(pool, timeout=10) == [], "compression processes outlived serve"
    serve.start()
    check_outcome(serve, request_id, webhook_receiver, store)


@pytest.mark.slow
def test_sigterm_mid_processing_exits_cleanly_and_restart_finishes(
    tmp_path: Path,
    services: list[ServiceProcess],
    image_server: LocalServer,
    webhook_receiver: LocalServer,
    store: tuple[str, str | None],
) -> None:
    """SIGTERM with images in flight: exit 0 within the grace period; a restart finishes."""
    serve = Restartable(tmp_path, services, store[1])
    first = serve.start()
    request_id = upload(serve.base, image_server, webhook_receiver.url("/hook"))
    deadline = time.monotonic() + 60
    while (
        httpx.get(f"{serve.base}/api/status/{request_id}", timeout=30).json()["progress"]["done"]
        < 5
    ):
        assert time.monotonic() < deadline, "no progress before SIGTERM"
        time.sleep(0.05)
    started = time.monotonic()
    assert first.stop() == 0
    assert time.monotonic() - started < 35
    serve.start()
    check_outcome(serve, request_id, webhook_receiver, store)
