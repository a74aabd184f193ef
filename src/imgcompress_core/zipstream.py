"""A zip archive written as a stream: each entry is yielded as soon as it is added, so an
archive of any size needs memory for one image at a time."""

from __future__ import annotations

import re
import zipfile

__all__ = ["ZipStream", "archive_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def archive_name(serial: str, product: str, position: int, extension: str) -> str:
    """Return an entry's name, ``{S. No.}-{Product Name}-{position}{ext}``, made safe for
    any file system (no paths, no control or special characters, bounded length)."""
    parts = [_UNSAFE.sub("_", part).strip("._-")[:60] for part in (serial, product)]
    stem = "-".join(part or "x" for part in parts)
    return f"{stem}-{position}{extension}"


class _Sink:
    """A write-only file that keeps what was written until it is taken."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._written = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class ZipStream:
    """Builds a zip archive entry by entry; each call returns the bytes to send next."""

    def __init__(self) -> None:
        self._sink = _Sink()
        # Stored, not deflated: the images are compressed already.
        self._zip = zipfile.ZipFile(self._sink, "w", zipfile.ZIP_STORED)  # type: ignore[call-overload]
        self._names: set[str] = set()

    def add(self, name: str, data: bytes) -> bytes:
        """Add one file (a name already used gets a numeric suffix); return its bytes."""
        unique, n = name, 1
        while unique in self._names:
            n += 1
            stem, dot, ext = name.rpartition(".")
            unique = f"{stem}-{n}.{ext}" if dot else f"{name}-{n}"
        self._names.add(unique)
        self._zip.writestr(unique, data)
        return self._sink.take()

    def close(self) -> bytes:
        """Finish the archive (its central directory); return the last bytes."""
        self._zip.close()
        return self._sink.take()
