"""The RIFF container of a WebP file: its chunks read in order, and written back."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["webp_chunks", "webp_file"]


def webp_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Return a WebP file's chunks as (name, payload), in order, up to the RIFF's end;
    raise ValueError when it is not a WebP or a chunk runs past that end."""
    if not data.startswith(b"RIFF") or data[8:12] != b"WEBP":
        raise ValueError("not a WebP")
    riff_end = 8 + int.from_bytes(data[4:8], "little")
    if riff_end > len(data):
        raise ValueError("the WebP is truncated")
    chunks, pos = [], 12
    while pos + 8 <= riff_end:
        name, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        end = pos + 8 + size
        if end > riff_end:
            raise ValueError(f"the WebP's {name!r} chunk is truncated")
        chunks.append((name, data[pos + 8 : end]))
        pos = end + size % 2  # payloads are padded to an even length
    return chunks


def webp_file(chunks: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Return a WebP file of ``chunks`` (name, payload), each padded to an even length."""
    body = b"WEBP" + b"".join(
        name + len(payload).to_bytes(4, "little") + payload + b"\x00" * (len(payload) % 2)
        for name, payload in chunks
    )
    return b"RIFF" + len(body).to_bytes(4, "little") + body
