"""A blob store in a plain directory: ``IMGCOMPRESS_BLOB_URL=file:///srv/imgcompress/blobs``.

Layout: ``<dir>/ab/cd/<key>.<ext>``, where ``<key>`` is the SHA-256 of the bytes (so
``abcd...``) and ``<ext>`` names the content type (``jpg``, ``webp``, ``png``, ``gif``,
``avif``; any other type is kept percent-encoded after a ``~``). The file holds exactly
the bytes, so any static file server (or a CDN in front of one) can serve the directory;
:meth:`FileBlobStore.public_path` gives the path below it.

- **Atomic writes**: bytes go to a temporary file in the same directory, are flushed to
  disk (``fsync``) and renamed over the final name (``os.replace``): a reader sees the
  whole blob or none, and a crash leaves at most a dot-file, removed after an hour.
- **Written time**: a blob's modification time is when it was last written; writing
  bytes that are already there only sets it again (a *touch*), as the port asks.
- **Conditional delete without a race**: the sweep renames a blob to a grave name, then
  reads the modification time *of the grave*: a writer that touched the blob before the
  rename left a fresh time there (the grave goes back), one that came after the rename
  found no file and wrote a fresh copy. Only then is the grave removed.

Blocking file I/O runs in anyio's worker threads. Several processes (and machines, on a
shared file system with POSIX rename semantics) may use one directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote, unquote

import anyio.to_thread

from ..errors import BlobNotFound, ImageFailure, StorageUnavailable
from ..model import Blob

__all__ = ["FileBlobStore"]

_KEY = re.compile(r"[0-9a-f]{8,128}")
_HEX2 = re.compile(r"[0-9a-f]{2}")
_EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/png": "png",
    "image/gif": "gif",
    "image/avif": "avif",
}
_TYPES = {ext: kind for kind, ext in _EXTENSIONS.items()}
_LEFTOVER_SECONDS = 3600.0  # a temporary or grave file this old was left by a crash


def _suffix(content_type: str) -> str:
    ext = _EXTENSIONS.get(content_type)
    return ext if ext is not None else "~" + quote(content_type, safe="")


def _content_type(suffix: str) -> str:
    if suffix.startswith("~"):
        return unquote(suffix[1:]) or "application/octet-stream"
    return _TYPES.get(suffix, "application/octet-stream")


def _ns(seconds: float) -> int:
    return round(seconds * 1_000_000_000)


class FileBlobStore:
    """The BlobStore port over a directory (content-addressed files, atomic writes)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.root = Path(directory)

    def __repr__(self) -> str:
        return f"FileBlobStore({str(self.root)!r})"

    # -- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        """Create the directory if it is missing."""
        try:
            await anyio.to_thread.run_sync(lambda: self.root.mkdir(parents=True, exist_ok=True))
        except OSError as exc:
            raise StorageUnavailable(
                f"cannot create the blob directory {self.root}: {exc}"
            ) from exc

    async def close(self) -> None:
        """Nothing to release."""

    async def ping(self) -> None:
        """Raise StorageUnavailable unless the directory exists and is writable."""
        usable = await anyio.to_thread.run_sync(
            lambda: self.root.is_dir() and os.access(self.root, os.W_OK | os.X_OK)
        )
        if not usable:
            raise StorageUnavailable(f"the blob directory {self.root} is missing or not writable")

    def public_path(self, key: str, content_type: str | None) -> str:
        """Return the path of ``key``'s file below the directory (for a static server)."""
        suffix = _suffix(content_type or "application/octet-stream")
        return f"{key[:2]}/{key[2:4]}/{key}.{quote(suffix, safe='~')}"

    # -- the port ---------------------------------------------------------------------

    async def put_blob(self, key: str, data: bytes, content_type: str, now: float) -> None:
        """Store ``data`` under ``key`` (or touch the copy there), stamped as written ``now``."""
        if not _KEY.fullmatch(key):
            raise ValueError(f"not a blob key: {key!r}")
        try:
            await anyio.to_thread.run_sync(self._put, key, data, content_type, now)
        except OSError as exc:
            raise ImageFailure(
                f"the blob directory {self.root} could not store the image ({exc}); "
                "it will be tried again",
                code="blob_store_unavailable",
                retryable=True,
            ) from exc

    async def get_blob(self, key: str) -> Blob:
        """Return a blob or raise BlobNotFound."""
        if not _KEY.fullmatch(key):
            raise BlobNotFound(key)
        try:
            found = await anyio.to_thread.run_sync(self._read, key)
        except OSError as exc:
            raise StorageUnavailable(f"reading blob {key} from {self.root} failed: {exc}") from exc
        if found is None:
            raise BlobNotFound(key)
        data, content_type = found
        return Blob(key, data, content_type)

    async def blobs_written_before(self, cutoff: float, after: str, limit: int) -> list[str]:
        """Return up to ``limit`` keys after ``after``, in key order, written before ``cutoff``."""
        try:
            return await anyio.to_thread.run_sync(self._list, cutoff, after, limit)
        except OSError as exc:
            raise StorageUnavailable(f"listing blobs in {self.root} failed: {exc}") from exc

    async def delete_blobs(self, keys: Sequence[str], written_before: float) -> None:
        """Delete these blobs unless one was written again at or after ``written_before``."""
        try:
            await anyio.to_thread.run_sync(self._delete, list(keys), written_before)
        except OSError as exc:
            raise StorageUnavailable(f"deleting blobs in {self.root} failed: {exc}") from exc

    # -- blocking helpers (run in threads) ----------------------------------------------

    def _leaf(self, key: str) -> Path:
        return self.root / key[:2] / key[2:4]

    def _find(self, key: str) -> Path | None:
        """Return the file holding ``key``, or None."""
        prefix = key + "."
        try:
            with os.scandir(self._leaf(key)) as entries:
                for entry in entries:
                    if entry.name.startswith(prefix):
                        return Path(entry.path)
        except FileNotFoundError:
            pass
        return None

    def _put(self, key: str, data: bytes, content_type: str, now: float) -> None:
        stamp = (_ns(now), _ns(now))
        existing = self._find(key)
        if existing is not None:
            try:
                os.utime(existing, ns=stamp)  # the same bytes are there: written again now
                return
            except FileNotFoundError:
                pass  # swept in the meantime: write a fresh copy
        leaf = self._leaf(key)
        leaf.mkdir(parents=True, exist_ok=True)
        final = leaf / f"{key}.{_suffix(content_type)}"
        temporary = leaf / f".{key}.{secrets.token_hex(6)}.tmp"
        try:
            with temporary.open("xb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, final)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        os.utime(final, ns=stamp)

    def _read(self, key: str) -> tuple[bytes, str] | None:
        for _ in range(3):  # a blob being swept is away for a moment and may come back
            path = self._find(key)
            if path is None:
                return None
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            return data, _content_type(path.name[len(key) + 1 :])
        return None

    def _dirs(self, parent: Path, start: str) -> Iterator[Path]:
        """Yield ``parent``'s two-hex-digit subdirectories from ``start`` on, sorted."""
        try:
            names = sorted(n for n in os.listdir(parent) if _HEX2.fullmatch(n) and n >= start)
        except FileNotFoundError:
            return
        for name in names:
            yield parent / name

    def _list(self, cutoff: float, after: str, limit: int) -> list[str]:
        found: list[str] = []
        if limit <= 0:
            return found
        limit_ns, stale = _ns(cutoff), time.time() - _LEFTOVER_SECONDS
        for top in self._dirs(self.root, after[:2]):
            start = after[2:4] if top.name == after[:2] else ""
            for leaf in self._dirs(top, start):
                entries: list[tuple[str, int]] = []
                with os.scandir(leaf) as scan:
                    for entry in scan:
                        try:
                            stat = entry.stat()
                        except FileNotFoundError:
                            continue
                        if entry.name.startswith("."):  # a write or a delete in progress
                            if stat.st_mtime < stale:
                                with contextlib.suppress(OSError):
                                    os.unlink(entry.path)
                            continue
                        key = entry.name.split(".", 1)[0]
                        if not _KEY.fullmatch(key):
                            continue  # not ours
                        if key > after and stat.st_mtime_ns < limit_ns:
                            entries.append((key, stat.st_mtime_ns))
                for key, _ in sorted(entries):
                    found.append(key)
                    if len(found) == limit:
                        return found
        return found

    def _delete(self, keys: list[str], written_before: float) -> None:
        limit_ns = _ns(written_before)
        for key in keys:
            path = self._find(key) if _KEY.fullmatch(key) else None
            if path is None:
                continue
            try:
                if path.stat().st_mtime_ns >= limit_ns:
                    continue  # written again since the sweep looked
                grave = path.with_name(f".{key}.{secrets.token_hex(6)}.del")
                os.rename(path, grave)
            except FileNotFoundError:
                continue
            if grave.stat().st_mtime_ns >= limit_ns:
                os.replace(grave, path)  # touched just before the rename: it stays
            else:
                grave.unlink()
