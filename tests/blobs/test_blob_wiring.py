"""IMGCOMPRESS_BLOB_URL=file:///dir end to end in one process: the worker writes the images
to the directory (none to the database), the service reads them back, and the links."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import anyio
import pytest
from litestar.testing import AsyncTestClient

from imgcompress_core import Imgcompress, Settings
from imgcompress_core.blobs import FileBlobStore
from imgcompress_core.errors import ImageNotFound, StorageUnavailable
from imgcompress_core.workflow import blob_key
from imgcompress_web import create_app
from servers import LocalServer, photo

pytestmark = pytest.mark.anyio


def two_images(image_server: LocalServer) -> bytes:
    """A CSV of one product with two distinct photos."""
    a = image_server.add("/a.jpg", photo(seed=1))
    b = image_server.add("/b.jpg", photo(seed=2))
    return f'S. No.,Product Name,Input Image Urls\n1,SKU1,"{a},{b}"\n'.encode()


def database_blobs(settings: Settings) -> int:
    with sqlite3.connect(settings.database) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM blobs").fetchone()
    return int(count)


async def test_images_go_to_the_directory_not_the_database(
    test_settings: Settings, image_server: LocalServer, tmp_path: Path
) -> None:
    """Both outputs are files in the directory, the database holds no bytes, and the
    service streams them back (no redirect: a directory has no links of its own)."""
    settings = test_settings.model_copy(update={"blob_url": f"file://{tmp_path}/blobs"})
    async with Imgcompress(settings) as ic:
        assert isinstance(ic.blobs, FileBlobStore)
        request_id = await ic.submit(two_images(image_server))
        report = await ic.wait(request_id, timeout=30)
        assert report.progress.done == 2
        files = sorted((tmp_path / "blobs").rglob("*.jpg"))
        assert len(files) == 2
        assert database_blobs(settings) == 0
        for image in report.images:
            assert await ic.image_location(image.image_id) is None
            stored = await ic.image(image.image_id)
            assert stored.content_type == "image/jpeg"
            assert stored.data in {f.read_bytes() for f in files}
        await ic.ready()
        with pytest.raises(ImageNotFound):
            await ic.image_location("no-such-image")


async def test_ready_reports_a_missing_blob_directory(
    test_settings: Settings, tmp_path: Path
) -> None:
    """/ready's check covers the blob store: a directory that went away is unavailable."""
    settings = test_settings.model_copy(
        update={"blob_url": f"file://{tmp_path}/blobs", "run_worker": False}
    )
    async with Imgcompress(settings, run_worker=False) as ic:
        await ic.ready()
        (tmp_path / "blobs").rmdir()
        with pytest.raises(StorageUnavailable, match="blob directory"):
            await ic.ready()


async def test_public_url_redirects_the_image_endpoint(
    test_settings: Settings, image_server: LocalServer, tmp_path: Path
) -> None:
    """With IMGCOMPRESS_BLOB_PUBLIC_URL, /api/images/{id} redirects to the file's public
    address (a static server or CDN over the directory)."""
    settings = test_settings.model_copy(
        update={
            "blob_url": f"file://{tmp_path}/blobs",
            "blob_public_url": "https://cdn.example.com/images/",
            "trusted_hosts": "testserver.local",  # the Host Litestar's test client sends
        }
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        upload = await client.post(
            "/api/upload", files={"file": ("p.csv", two_images(image_server), "text/csv")}
        )
        request_id = upload.json()["requestId"]
        with anyio.fail_after(30):
            while (status := (await client.get(f"/api/status/{request_id}")).json())[
                "status"
            ] == "Pending":
                await anyio.sleep(0.05)
        image_id = status["products"][0]["images"][0]["imageId"]
        answer = await client.get(f"/api/images/{image_id}", follow_redirects=False)
        assert answer.status_code == 302
        location = answer.headers["location"]
        public = {
            f"https://cdn.example.com/images/{path.relative_to(tmp_path / 'blobs')}"
            for path in (tmp_path / "blobs").rglob("*.jpg")
        }
        assert len(public) == 2
        assert location in public
        assert answer.headers["cache-control"] == "public, max-age=3600"
        # The status document and the output CSV link straight to the public address.
        links = [image["outputUrl"] for image in status["products"][0]["images"]]
        assert set(links) == public
        csv = (await client.get(f"/api/requests/{request_id}/output.csv")).text
        assert all(link in csv for link in links)
        assert "/api/images/" not in csv


async def test_an_orphan_file_goes_with_the_next_sweep(
    test_settings: Settings, image_server: LocalServer, tmp_path: Path
) -> None:
    """A file nothing references (a worker died between writing it and marking its image
    done) is deleted by the sweep once it is older than the grace period; the request's
    files stay."""
    settings = test_settings.model_copy(update={"blob_url": f"file://{tmp_path}/blobs"})
    async with Imgcompress(settings) as ic:
        request_id = await ic.submit(two_images(image_server))
        await ic.wait(request_id, timeout=30)
        assert ic.blobs is not None and ic.worker is not None
        orphan = b"written, then the worker died"
        await ic.blobs.put_blob(blob_key(orphan), orphan, "image/jpeg", time.time())
        assert len(list((tmp_path / "blobs").rglob("*.jpg"))) == 3
        assert await ic.worker.workflow.sweep_blobs(grace_seconds=-5) == 1
        assert len(list((tmp_path / "blobs").rglob("*.jpg"))) == 2
        for image in (await ic.status(request_id)).images:
            assert (await ic.image(image.image_id)).data


def test_a_public_url_without_a_blob_store_is_refused(test_settings: Settings) -> None:
    """The database serves no public URL: the setting alone fails at start-up, saying why."""
    settings = test_settings.model_copy(update={"blob_public_url": "https://cdn.example.com"})
    with pytest.raises(ValueError, match="needs IMGCOMPRESS_BLOB_URL"):
        Imgcompress(settings)
