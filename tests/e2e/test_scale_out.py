"""Scale-out for real: one `serve` and three `worker` processes on one store, one SIGKILLed.

Every image must end done exactly once, the request must complete, and the webhook must
arrive once, although a worker died holding leases on images it had claimed.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

from procs import ServiceProcess, env_for, free_port, wait_final
from servers import LocalServer, photo

IMAGES = 300


def big_csv(image_server: LocalServer) -> bytes:
    """A CSV of 100 products with 3 images each, cycling over 10 distinct photos."""
    for n in range(10):
        image_server.add(f"/photo{n}.jpg", photo(240, 180, seed=n))
    lines = ["S. No.,Product Name,Input Image Urls"]
    for row in range(IMAGES // 3):
        urls = [
            image_server.url(f"/photo{(row * 3 + k) % 10}.jpg?i={row * 3 + k}") for k in range(3)
        ]
        lines.append(f'{row + 1},Product {row + 1},"{",".join(urls)}"')
    return ("\n".join(lines) + "\n").encode()


def progress(base: str, request_id: str) -> dict[str, int]:
    """Return the progress counts."""
    body = httpx.get(f"{base}/api/status/{request_id}", timeout=30).json()
    return body["progress"]  # type: ignore[no-any-return]


def stored_images(tmp_path: Path, store: str, uri: str | None) -> tuple[int, int]:
    """Return (done images whose bytes are in the store, blobs stored), straight from the
    store; identical outputs share one blob."""
    if store == "sqlite":
        with sqlite3.connect(tmp_path / "service.sqlite3") as db:
            (stored,) = db.execute(
                "SELECT COUNT(*) FROM images JOIN blobs ON blobs.key = images.blob_key"
                " WHERE images.state = 'done'"
            ).fetchone()
            (blobs,) = db.execute("SELECT COUNT(*) FROM blobs").fetchone()
        return stored, blobs
    with MongoClient(uri) as client:
        db = client.get_default_database()
        keys = {d["_id"] for d in db.blobs.find({}, projection={"_id": 1})}
        done = list(db.images.find({"state": "done"}, projection={"blobKey": 1}))
    return sum(1 for d in done if d.get("blobKey") in keys), len(keys)


def leases(tmp_path: Path, store: str, uri: str | None) -> dict[str, int]:
    """Return {image id: worker pid} for every image a worker holds a lease on right now."""
    if store == "sqlite":
        with sqlite3.connect(tmp_path / "service.sqlite3") as db:
            rows = list(
                db.execute("SELECT image_id, lease_owner FROM images WHERE state='working'")
            )
    else:
        with MongoClient(uri) as client:
            docs = client.get_default_database().images.find(
                {"state": "working"}, projection={"leaseOwner": 1}
            )
            rows = [(d["_id"], d.get("leaseOwner")) for d in docs]
    return {image: int(owner.split(":")[1]) for image, owner in rows if owner}


@pytest.mark.slow
def test_three_workers_one_killed(
    tmp_path: Path,
    services: list[ServiceProcess],
    image_server: LocalServer,
    webhook_receiver: LocalServer,
    store: tuple[str, str | None],
) -> None:
    """serve + 3 workers on one store; SIGKILL one mid-way; nothing lost or doubled."""
    name, uri = store
    env = env_for(tmp_path)
    env.update(IMGCOMPRESS_LEASE_SECONDS="3", IMGCOMPRESS_CPU_WORKERS="1")
    if uri:
        env["IMGCOMPRESS_MONGODB_URI"] = uri
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web = ServiceProcess(
        ["serve", "--port", str(port), "--no-run-worker"], env, tmp_path / "web.log"
    )
    services.append(web)
    web.wait_http(base)
    response = httpx.post(
        f"{base}/api/upload",
        files={"file": ("big.csv", big_csv(image_server), "text/csv")},
        data={"webhook_url": webhook_receiver.url("/hook")},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    request_id = response.json()["requestId"]

    workers = [ServiceProcess(["worker"], env, tmp_path / f"worker{n}.log") for n in range(3)]
    services.extend(workers)
    deadline = time.monotonic() + 60
    by_pid = {worker.process.pid: worker for worker in workers}
    while progress(base, request_id)["done"] < IMAGES // 6:
        assert time.monotonic() < deadline, "no progress before the kill"
        time.sleep(0.1)
    # Kill a worker that holds leases. Which images it died holding is read after the kill
    # (it may finish the ones it held a moment before); if none, kill another holder.
    orphans: set[str] = set()
    killed: list[ServiceProcess] = []
    while not orphans:
        alive = [w for w in workers if w.process.poll() is None]
        assert len(alive) >= 2 and time.monotonic() < deadline, "no worker died holding images"
        held = leases(tmp_path, name, uri)
        holders = sorted({pid for pid in held.values() if pid in by_pid})
        if not holders:
            time.sleep(0.05)
            continue
        victim = by_pid[holders[0]]
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait()
        killed.append(victim)
        orphans = {image for image, pid in leases(tmp_path, name, uri).items() if pid == holders[0]}
    killed_at = progress(base, request_id)
    assert killed_at["finished"] < IMAGES, "the kill came too late to prove anything"

    final = wait_final(base, request_id, timeout=120)
    assert final["status"] == "Completed"
    assert final["progress"]["done"] == IMAGES
    assert final["progress"]["failed"] == 0
    images = [image for product in final["products"] for image in product["images"]]
    assert [image["state"] for image in images] == ["done"] * IMAGES
    by_id = {image["imageId"]: image for image in images}
    # Every image the dead worker held was taken over by another one: a second attempt.
    assert all(by_id[image]["attempts"] >= 2 for image in orphans), orphans

    stored, blobs = stored_images(tmp_path, name, uri)
    assert stored == IMAGES
    assert blobs == 10  # ten distinct photos: identical outputs are stored once

    deadline = time.monotonic() + 20
    while not webhook_receiver.posts() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)  # a duplicate delivery would arrive within the poll interval
    hooks = webhook_receiver.posts()
    assert len(hooks) == 1
    assert hooks[0].json()["done"] == IMAGES
    for worker in workers:
        if worker not in killed:
            assert worker.stop() == 0
    assert web.stop() == 0
