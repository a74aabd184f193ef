"""Scale-out with object storage, for real: `serve` and two `imgcompress worker` processes
on one MongoDB (the stand-in, or IMGCOMPRESS_TEST_MONGODB_URI) and one bucket (moto, or
IMGCOMPRESS_TEST_S3_URL). 200 distinct images: every output is in the bucket exactly
once, the database holds none of the bytes, and /api/images/{id} hands out links to them.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient
from s3_server import Bucket

from procs import ServiceProcess, env_for, free_port
from servers import LocalServer, photo

IMAGES = 200


def distinct_csv(image_server: LocalServer) -> bytes:
    """100 products with 2 images each, every image a different photo."""
    lines = ["S. No.,Product Name,Input Image Urls"]
    for row in range(IMAGES // 2):
        urls = [
            image_server.add(f"/r{row}-{k}.jpg", photo(80, 60, seed=row * 2 + k)) for k in range(2)
        ]
        lines.append(f'{row + 1},Product {row + 1},"{",".join(urls)}"')
    return ("\n".join(lines) + "\n").encode()


def summary(base: str, request_id: str) -> dict[str, object]:
    """The cheap status poll (no per-image detail)."""
    answer = httpx.get(f"{base}/api/status/{request_id}?products=false", timeout=30)
    return answer.json()  # type: ignore[no-any-return]


@pytest.mark.slow
def test_two_workers_one_mongodb_one_bucket(
    tmp_path: Path,
    services: list[ServiceProcess],
    image_server: LocalServer,
    mongodb_uri: str,
    s3_bucket: Bucket,
) -> None:
    """serve + 2 workers; 200 images: each output stored once in the bucket, none in MongoDB."""
    env = env_for(tmp_path)
    env.update(s3_bucket.env)
    env.update(
        IMGCOMPRESS_MONGODB_URI=mongodb_uri,
        IMGCOMPRESS_BLOB_URL=s3_bucket.url,
        IMGCOMPRESS_CPU_WORKERS="1",
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web = ServiceProcess(
        ["serve", "--port", str(port), "--no-run-worker"], env, tmp_path / "web.log"
    )
    services.append(web)
    web.wait_http(base)
    assert httpx.get(f"{base}/ready", timeout=10).status_code == 200  # MongoDB and the bucket
    workers = [ServiceProcess(["worker"], env, tmp_path / f"worker{n}.log") for n in range(2)]
    services.extend(workers)

    upload = httpx.post(
        f"{base}/api/upload",
        files={"file": ("distinct.csv", distinct_csv(image_server), "text/csv")},
        timeout=30,
    )
    assert upload.status_code == 202, upload.text
    request_id = upload.json()["requestId"]
    deadline = time.monotonic() + 150
    while summary(base, request_id)["status"] == "Pending":
        assert time.monotonic() < deadline, summary(base, request_id)
        time.sleep(0.25)
    final = httpx.get(f"{base}/api/status/{request_id}", timeout=60).json()
    assert final["status"] == "Completed"
    assert final["progress"]["done"] == IMAGES

    objects = s3_bucket.object_keys()
    assert len(objects) == IMAGES == len(set(objects))  # each output once
    in_bucket = {key.rsplit("/", 1)[1] for key in objects}
    with MongoClient(mongodb_uri) as client:
        db = client.get_default_database()
        assert db.blobs.count_documents({}) == 0  # no bytes in the database
        keys = [d.get("blobKey") for d in db.images.find({}, projection={"blobKey": 1})]
    assert len(keys) == IMAGES
    assert set(keys) == in_bucket  # every image's output is an object, and only those

    image_id = final["products"][0]["images"][0]["imageId"]
    answer = httpx.get(f"{base}/api/images/{image_id}", timeout=10, follow_redirects=True)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/jpeg"
    worked = [w.log.read_text().count("request finished") for w in workers]
    assert sum(worked) == 1  # finalized once, by one of them
    for process in [*workers, web]:
        assert process.stop() == 0
