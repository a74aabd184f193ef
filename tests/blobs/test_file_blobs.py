"""FileBlobStore: the blob contract on a real directory, and what a directory adds."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from imgcompress_core.blobs import FileBlobStore, blobs_from_settings, public_path
from imgcompress_core.errors import (
    BlobNotFound,
    ImageFailure,
    ImgCompressError,
    StorageUnavailable,
)
from imgcompress_core.ports import BlobStore
from imgcompress_core.settings import Settings
from imgcompress_core.testing import BlobContract
from imgcompress_core.workflow import blob_key

pytestmark = pytest.mark.anyio
T0 = 1_700_000_000.0


class TestFileBlobContract(BlobContract):
    """FileBlobStore passes the contract every blob store passes."""

    @pytest.fixture
    async def blobs(self, tmp_path: Path) -> AsyncIterator[BlobStore]:
        store = FileBlobStore(tmp_path / "blobs")
        await store.open()
        yield store
        await store.close()


@pytest.fixture
async def store(tmp_path: Path) -> FileBlobStore:
    blobs = FileBlobStore(tmp_path / "blobs")
    await blobs.open()
    return blobs


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_layout_is_plain_files_a_static_server_can_serve(store: FileBlobStore) -> None:
    """ab/cd/<sha256>.<ext> holding exactly the bytes, at the path public_path names."""
    data = b"\xff\xd8 jpeg bytes"
    key = blob_key(data)
    await store.put_blob(key, data, "image/jpeg", T0)
    assert files(store.root) == [f"{key[:2]}/{key[2:4]}/{key}.jpg"]
    assert (store.root / public_path(store, key, "image/jpeg")).read_bytes() == data
    assert public_path(object(), key, "image/jpeg") == key  # a store without paths: the key


async def test_any_content_type_round_trips(store: FileBlobStore) -> None:
    """A content type without a file extension is kept, percent-encoded, in the name."""
    data = b"<svg/>"
    key = blob_key(data)
    await store.put_blob(key, data, "image/svg+xml; charset=utf-8", T0)
    assert (await store.get_blob(key)).content_type == "image/svg+xml; charset=utf-8"
    path = public_path(store, key, "image/svg+xml; charset=utf-8")
    assert "/" not in path.rsplit("/", 1)[1] and "%25" in path  # a URL path to the file


async def test_written_time_is_the_modification_time(store: FileBlobStore) -> None:
    """put stamps the file's mtime with ``now``; writing the same bytes again touches it."""
    key = blob_key(b"x" * 10)
    await store.put_blob(key, b"x" * 10, "image/png", T0)
    (path,) = store.root.rglob(f"{key}.*")
    assert path.stat().st_mtime == T0
    before = path.stat().st_ino
    await store.put_blob(key, b"x" * 10, "image/png", T0 + 30)
    assert path.stat().st_mtime == T0 + 30
    assert path.stat().st_ino == before  # touched, not written again


async def test_a_crash_mid_write_leaves_only_a_dot_file_that_goes(store: FileBlobStore) -> None:
    """A temporary file is never read as a blob and is removed once it is an hour old."""
    key = blob_key(b"half")
    leaf = store.root / key[:2] / key[2:4]
    leaf.mkdir(parents=True)
    leftover = leaf / f".{key}.abc.tmp"
    leftover.write_bytes(b"ha")
    with pytest.raises(BlobNotFound):
        await store.get_blob(key)
    assert await store.blobs_written_before(time.time() + 10, "", 10) == []
    assert leftover.exists()  # young: perhaps a write in progress
    os.utime(leftover, (time.time() - 7200, time.time() - 7200))
    await store.blobs_written_before(time.time() + 10, "", 10)
    assert not leftover.exists()


async def test_foreign_files_are_ignored(store: FileBlobStore) -> None:
    """Files that are not blobs (a README, another tool's) are never listed or read."""
    (store.root / "ab").mkdir()
    (store.root / "README").write_text("hi")
    (store.root / "ab" / "cd").mkdir()
    (store.root / "ab" / "cd" / "notes.txt").write_text("hi")
    assert await store.blobs_written_before(T0 + 10**9, "", 10) == []
    with pytest.raises(BlobNotFound):
        await store.get_blob("../../etc/passwd")
    with pytest.raises(ValueError, match="not a blob key"):
        await store.put_blob("../escape", b"x", "image/jpeg", T0)


async def test_a_touch_racing_the_sweep_keeps_the_blob(
    store: FileBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep reads the time of the renamed file: a touch just before the rename wins."""
    data = b"reused"
    key = blob_key(data)
    await store.put_blob(key, data, "image/jpeg", T0)
    (path,) = store.root.rglob(f"{key}.*")
    real_rename = os.rename

    def touch_then_rename(src: str | Path, dst: str | Path) -> None:
        os.utime(src, (T0 + 100, T0 + 100))  # a worker writes the same bytes right now
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", touch_then_rename)
    await store.delete_blobs([key], T0 + 50)
    monkeypatch.undo()
    assert (await store.get_blob(key)).data == data
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no grave left behind


async def test_unwritable_directory_is_a_retryable_image_failure(tmp_path: Path) -> None:
    """A directory that cannot be written fails the write as blob_store_unavailable
    (retried), and ping says the store is unavailable."""
    root = tmp_path / "blobs"
    store = FileBlobStore(root)
    await store.open()
    root.rmdir()
    root.write_text("a file where the directory was")
    with pytest.raises(ImageFailure) as failure:
        await store.put_blob(blob_key(b"x"), b"x", "image/jpeg", T0)
    assert failure.value.code == "blob_store_unavailable"
    assert failure.value.retryable
    assert str(root) in failure.value.message
    with pytest.raises(StorageUnavailable):
        await store.ping()


def test_settings_pick_the_blob_store(tmp_path: Path) -> None:
    """blob_url: unset keeps the bytes in the database, file:/// is a directory, an unknown
    scheme names the missing adapter."""
    assert blobs_from_settings(Settings()) is None
    store = blobs_from_settings(Settings(blob_url=f"file://{tmp_path}/b%20c"))
    assert isinstance(store, FileBlobStore)
    assert store.root == tmp_path / "b c"
    with pytest.raises(ImgCompressError) as missing:
        blobs_from_settings(Settings(blob_url="gcs://bucket/x"))
    assert missing.value.code == "storage_adapter_missing"
    with pytest.raises(ValueError, match="file:///absolute"):
        blobs_from_settings(Settings(blob_url="file://host/dir"))
