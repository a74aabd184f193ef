"""The SQLite store's blobs and reuse cache (content-addressed bytes, outputs, sources)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..errors import BlobNotFound
from ..model import Blob, Output, Source
from ._sqlite_base import SqliteBase, in_thread
from ._sqlite_schema import to_output, to_source

__all__ = ["SqliteBlobsAndCache"]


class SqliteBlobsAndCache(SqliteBase):
    """Blobs in a table of the same file, and the reuse cache."""

    # -- the reuse cache --------------------------------------------------------------

    @in_thread
    def get_source(self, owner: str, url: str) -> Source | None:
        """Return the last download of ``url`` for ``owner``."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT * FROM sources WHERE owner = ? AND url = ?", (owner, url)
            ).fetchone()
        return None if row is None else to_source(row)

    @in_thread
    def recall(
        self, owner: str, url: str, policy: str, now: float
    ) -> tuple[Source | None, Output | None]:
        """Return the URL's last download and its output under ``policy`` (marked used),
        in one transaction."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT * FROM sources WHERE owner = ? AND url = ?", (owner, url)
            ).fetchone()
            if row is None:
                return None, None
            source = to_source(row)
            found = conn.execute(
                "UPDATE outputs SET last_used_at = ? WHERE owner = ? AND policy = ?"
                " AND input_hash = ? RETURNING *",
                (now, owner, policy, source.input_hash),
            ).fetchone()
        return source, None if found is None else to_output(found)

    @in_thread
    def put_source(self, source: Source) -> None:
        """Record (or replace) the last download of a URL."""
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO sources (owner, url, input_hash, etag, last_modified,"
                " fetched_at, request_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    source.owner,
                    source.url,
                    source.input_hash,
                    source.etag,
                    source.last_modified,
                    source.fetched_at,
                    source.request_id,
                ),
            )

    @in_thread
    def find_output(self, owner: str, policy: str, input_hash: str, now: float) -> Output | None:
        """Return the output of this input, marking it used."""
        with self._write() as conn:
            row = conn.execute(
                "UPDATE outputs SET last_used_at = ? WHERE owner = ? AND policy = ?"
                " AND input_hash = ? RETURNING *",
                (now, owner, policy, input_hash),
            ).fetchone()
        return None if row is None else to_output(row)

    @in_thread
    def get_output(self, output_id: str) -> Output | None:
        """Return an output by id."""
        with self._read() as conn:
            row = conn.execute("SELECT * FROM outputs WHERE output_id = ?", (output_id,)).fetchone()
        return None if row is None else to_output(row)

    @in_thread
    def output_in_use(self, output_id: str) -> bool:
        """Return True if some image references this output."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT 1 FROM images WHERE output_id = ? LIMIT 1", (output_id,)
            ).fetchone()
        return row is not None

    @in_thread
    def add_output(self, output: Output) -> Output:
        """Keep the output unless its input already has one; return the one kept."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO outputs (output_id, owner, policy, input_hash, blob_key,"
                " content_type, width, height, input_bytes, output_bytes, note, quality, score,"
                " warnings, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (owner, policy, input_hash) DO UPDATE"
                " SET last_used_at = excluded.last_used_at",
                (
                    output.output_id,
                    output.owner,
                    output.policy,
                    output.input_hash,
                    output.blob_key,
                    output.content_type,
                    output.width,
                    output.height,
                    output.input_bytes,
                    output.output_bytes,
                    output.note,
                    output.quality,
                    output.score,
                    json.dumps(output.warnings),
                    output.last_used_at,
                ),
            )
            row = conn.execute(
                "SELECT * FROM outputs WHERE owner = ? AND policy = ? AND input_hash = ?",
                (output.owner, output.policy, output.input_hash),
            ).fetchone()
        return to_output(row)

    @in_thread
    def delete_unreferenced_outputs(self, used_before: float, limit: int) -> int:
        """Delete outputs unused since ``used_before`` that no image references, and the
        sources that led only to them."""
        with self._write() as conn:
            gone = conn.execute(
                "DELETE FROM outputs WHERE output_id IN (SELECT output_id FROM outputs o"
                " WHERE last_used_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM images i WHERE i.output_id = o.output_id) LIMIT ?)",
                (used_before, limit),
            ).rowcount
            if gone:
                conn.execute(
                    "DELETE FROM sources WHERE NOT EXISTS (SELECT 1 FROM outputs o"
                    " WHERE o.owner = sources.owner AND o.input_hash = sources.input_hash)"
                )
        return int(gone)

    # -- blobs ------------------------------------------------------------------------

    @in_thread
    def put_blob(self, key: str, data: bytes, content_type: str, now: float) -> None:
        """Store the bytes under ``key`` (one copy), stamped ``now``."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO blobs (key, data, content_type, written_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET written_at = excluded.written_at",
                (key, data, content_type, now),
            )

    @in_thread
    def get_blob(self, key: str) -> Blob:
        """Return a blob or raise BlobNotFound."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT data, content_type FROM blobs WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            raise BlobNotFound(key)
        return Blob(key, bytes(row["data"]), row["content_type"])

    @in_thread
    def blobs_written_before(self, cutoff: float, after: str, limit: int) -> list[str]:
        """Return keys after ``after`` of blobs written before ``cutoff``, in key order."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT key FROM blobs WHERE key > ? AND written_at < ? ORDER BY key LIMIT ?",
                (after, cutoff, limit),
            ).fetchall()
        return [r["key"] for r in rows]

    @in_thread
    def delete_blobs(self, keys: Sequence[str], written_before: float) -> None:
        """Delete these blobs unless written again since ``written_before``."""
        with self._write() as conn:
            conn.executemany(
                "DELETE FROM blobs WHERE key = ? AND written_at < ?",
                ((key, written_before) for key in keys),
            )
