"""The embedded default store: one SQLite file, durable, no server.

The web process and any number of worker processes may open the same file: the
database runs in WAL mode, every change is one ``BEGIN IMMEDIATE`` transaction, and
claims are conditional updates (``UPDATE ... WHERE state = 'queued' ... RETURNING``), so
two processes never get the same image. Blocking sqlite3 calls run in a worker thread,
one at a time per store, so the event loop never waits on the disk. It plays every
storage role (blobs in a table of the same file); the rules are the workflow's.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence

from ..errors import (
    ImageNotFound,
    LeaseLost,
    RequestNotFound,
)
from ..model import (
    Delivery,
    DeliveryClaim,
    DeliveryOutcome,
    DeliveryState,
    Failure,
    ImageRecord,
    ImageState,
    KeyHolder,
    NewRequest,
    ProductRecord,
    RequestRecord,
    RequestStatus,
    new_id,
)
from ._sqlite_base import PENDING, QUEUED, WORKING, in_thread, states_in
from ._sqlite_cache import SqliteBlobsAndCache
from ._sqlite_queue import SqliteImageQueue
from ._sqlite_schema import to_delivery, to_image, to_product, to_request

__all__ = ["SqliteStorage"]


class SqliteStorage(SqliteImageQueue, SqliteBlobsAndCache):
    """Every storage role in one SQLite file, shared safely by several processes."""

    # -- requests ---------------------------------------------------------------------

    @in_thread
    def create_request(self, request: NewRequest) -> KeyHolder | None:
        """Store a request with its products and queued images in one transaction (or return
        the request already holding its Idempotency-Key)."""
        rid = request.request_id
        with self._write() as conn:
            if request.idempotency_key is not None:
                holder = conn.execute(
                    "SELECT request_id, body_hash FROM idempotency WHERE key = ?",
                    (request.idempotency_key,),
                ).fetchone()
                if holder is not None:
                    return KeyHolder(holder["request_id"], holder["body_hash"])
                conn.execute(
                    "INSERT INTO idempotency (key, request_id, body_hash) VALUES (?, ?, ?)",
                    (request.idempotency_key, rid, request.body_hash),
                )
            conn.execute(
                "INSERT INTO requests (request_id, status, columns, webhook_url, created_at,"
                " updated_at, total_images, base_url, owner, policy)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rid,
                    PENDING,
                    json.dumps(request.columns),
                    request.webhook_url,
                    request.created_at,
                    request.created_at,
                    len(request.images),
                    request.base_url,
                    request.owner,
                    request.policy,
                ),
            )
            conn.executemany(
                "INSERT INTO products (request_id, row, serial, name, cells)"
                " VALUES (?, ?, ?, ?, ?)",
                ((rid, p.row, p.serial, p.name, json.dumps(p.cells)) for p in request.products),
            )
            conn.executemany(
                "INSERT INTO images (image_id, request_id, row, position, url, host, state,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (i.image_id, rid, i.row, i.position, i.url, i.host, QUEUED, request.created_at)
                    for i in sorted(request.images, key=lambda i: (i.row, i.position))
                ),
            )
        return None

    @staticmethod
    def _request(conn: sqlite3.Connection, request_id: str) -> RequestRecord:
        row = conn.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,)).fetchone()
        if row is None:
            raise RequestNotFound(request_id)
        return to_request(row)

    @in_thread
    def get_request(self, request_id: str) -> RequestRecord:
        """Return a request or raise RequestNotFound."""
        with self._read() as conn:
            return self._request(conn, request_id)

    @in_thread
    def list_requests(
        self, owner: str | None, before: tuple[float, str] | None, limit: int
    ) -> list[RequestRecord]:
        """Return requests newest first, older than ``before``, only ``owner``'s if given."""
        where: list[str] = ["1 = 1"]
        params: list[object] = []
        if owner is not None:
            where.append("owner = ?")
            params.append(owner)
        if before is not None:
            where.append("(created_at, request_id) < (?, ?)")
            params += [before[0], before[1]]
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT * FROM requests WHERE {' AND '.join(where)}"
                " ORDER BY created_at DESC, request_id DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [to_request(r) for r in rows]

    @in_thread
    def reopen_request(self, request_id: str, keep_codes: frozenset[str], now: float) -> int:
        """Queue the failed images (codes not in ``keep_codes``) of a final request again,
        and make the request Pending in a new round, in one transaction."""
        kept = sorted(keep_codes)
        with self._write() as conn:
            request = self._request(conn, request_id)
            if request.status is RequestStatus.PENDING:
                return 0
            requeued = conn.execute(
                "UPDATE images SET state = ?, attempts = 0, failure_code = NULL,"
                " failure_message = NULL, lease_token = NULL, lease_expires_at = 0,"
                " not_before = 0, updated_at = ? WHERE request_id = ? AND state = ?"
                f" AND failure_code NOT IN ({', '.join('?' * len(kept))})",
                (QUEUED, now, request_id, ImageState.FAILED.value, *kept),
            ).rowcount
            if requeued:
                conn.execute(
                    "UPDATE requests SET status = ?, finished_at = NULL, updated_at = ?,"
                    " round = round + 1 WHERE request_id = ?",
                    (PENDING, now, request_id),
                )
        return int(requeued)

    @in_thread
    def list_products(
        self, request_id: str, *, after_row: int = 0, limit: int | None = None
    ) -> list[ProductRecord]:
        """Return a request's products in row order, after ``after_row``, at most ``limit``."""
        with self._read() as conn:
            self._request(conn, request_id)
            rows = conn.execute(
                "SELECT * FROM products WHERE request_id = ? AND row > ? ORDER BY row LIMIT ?",
                (request_id, after_row, -1 if limit is None else limit),
            ).fetchall()
        return [to_product(r) for r in rows]

    @in_thread
    def list_images(
        self, request_id: str, *, rows: tuple[int, int] | None = None
    ) -> list[ImageRecord]:
        """Return a request's images ordered by row, then position (only ``rows``, if given)."""
        first, last = rows or (-(2**62), 2**62)
        with self._read() as conn:
            self._request(conn, request_id)
            found = conn.execute(
                "SELECT * FROM images WHERE request_id = ? AND row BETWEEN ? AND ?"
                " ORDER BY row, position",
                (request_id, first, last),
            ).fetchall()
        return [to_image(r) for r in found]

    @in_thread
    def get_image(self, image_id: str) -> ImageRecord:
        """Return one image or raise ImageNotFound."""
        with self._read() as conn:
            row = conn.execute("SELECT * FROM images WHERE image_id = ?", (image_id,)).fetchone()
        if row is None:
            raise ImageNotFound(image_id)
        return to_image(row)

    @in_thread
    def count_images(self, request_id: str) -> Mapping[ImageState, int]:
        """Count a request's images by state."""
        with self._read() as conn:
            self._request(conn, request_id)
            rows = conn.execute(
                "SELECT state, COUNT(*) AS n FROM images WHERE request_id = ? GROUP BY state",
                (request_id,),
            ).fetchall()
        return {ImageState(r["state"]): r["n"] for r in rows}

    @in_thread
    def has_images_in(self, request_id: str, states: frozenset[ImageState]) -> bool:
        """Return True if any of the request's images is in ``states`` (one index probe)."""
        listed, values = states_in(states)
        with self._read() as conn:
            self._request(conn, request_id)
            row = conn.execute(
                f"SELECT 1 FROM images WHERE request_id = ? AND state IN {listed} LIMIT 1",
                (request_id, *values),
            ).fetchone()
        return row is not None

    @in_thread
    def finalize_request(
        self, request_id: str, status: RequestStatus, now: float, delivery_id: str | None
    ) -> RequestRecord | None:
        """Set the final status if still Pending and queue the delivery, in one transaction."""
        with self._write() as conn:
            changed = conn.execute(
                "UPDATE requests SET status = ?, updated_at = ?, finished_at = ?"
                " WHERE request_id = ? AND status = ? RETURNING *",
                (status.value, now, now, request_id, PENDING),
            ).fetchone()
            if changed is None:
                self._request(conn, request_id)  # RequestNotFound if it is gone
                return None
            final = to_request(changed)
            if delivery_id is not None and final.webhook_url:
                conn.execute(
                    "INSERT OR IGNORE INTO deliveries (delivery_id, request_id, url, state,"
                    " next_attempt_at) VALUES (?, ?, ?, ?, ?)",
                    (delivery_id, request_id, final.webhook_url, DeliveryState.PENDING.value, now),
                )
            return final

    @in_thread
    def unfinalized_requests(self, limit: int, now: float) -> list[str]:
        """Return Pending requests with no unfinished image."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT request_id FROM requests r WHERE status = ? AND NOT EXISTS"
                " (SELECT 1 FROM images i WHERE i.request_id = r.request_id"
                " AND i.state IN (?, ?)) LIMIT ?",
                (PENDING, QUEUED, WORKING, limit),
            ).fetchall()
        return [r["request_id"] for r in rows]

    @in_thread
    def cancel_images(
        self, request_id: str, states: frozenset[ImageState], failure: Failure, now: float
    ) -> None:
        """Fail the request's images in ``states`` in one transaction; their leases end."""
        listed, values = states_in(states)
        with self._write() as conn:
            self._request(conn, request_id)
            conn.execute(
                "UPDATE images SET state = ?, failure_code = ?, failure_message = ?,"
                f" lease_token = NULL, updated_at = ? WHERE request_id = ? AND state IN {listed}",
                (ImageState.FAILED.value, failure.code, failure.message, now, request_id, *values),
            )

    @in_thread
    def delete_request(self, request_id: str) -> None:
        """Remove the request and everything recorded for it (blobs go with the sweep)."""
        with self._write() as conn:
            self._request(conn, request_id)
            for table in ("images", "products", "deliveries", "idempotency", "requests"):
                conn.execute(f"DELETE FROM {table} WHERE request_id = ?", (request_id,))

    @in_thread
    def finished_before(self, cutoff: float, limit: int) -> list[str]:
        """Return final requests that finished before ``cutoff``."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT request_id FROM requests WHERE finished_at < ? LIMIT ?", (cutoff, limit)
            ).fetchall()
        return [r["request_id"] for r in rows]

    @in_thread
    def referenced_blobs(self, keys: Sequence[str]) -> set[str]:
        """Return the keys some image or cached output references."""
        found: set[str] = set()
        with self._read() as conn:
            for start in range(0, len(keys), 400):
                chunk = list(keys[start : start + 400])
                marks = ", ".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT blob_key FROM images WHERE blob_key IN ({marks})"
                    f" UNION SELECT blob_key FROM outputs WHERE blob_key IN ({marks})",
                    chunk + chunk,
                ).fetchall()
                found.update(r["blob_key"] for r in rows)
        return found

    # -- webhook deliveries -----------------------------------------------------------

    @in_thread
    def claim_deliveries(
        self, worker: str, limit: int, *, now: float, lease_seconds: float
    ) -> list[DeliveryClaim]:
        """Lease up to ``limit`` due deliveries in one conditional update."""
        token = new_id()
        with self._write() as conn:
            rows = conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, lease_token = ?,"
                " lease_expires_at = ? WHERE delivery_id IN ("
                " SELECT delivery_id FROM deliveries WHERE state = ? AND next_attempt_at <= ?"
                " AND lease_expires_at <= ? ORDER BY next_attempt_at LIMIT ?)"
                " RETURNING delivery_id, request_id, url, attempts",
                (token, now + lease_seconds, DeliveryState.PENDING.value, now, now, limit),
            ).fetchall()
        return [
            DeliveryClaim(r["delivery_id"], r["request_id"], r["url"], r["attempts"], token)
            for r in rows
        ]

    @in_thread
    def record_delivery(self, claim: DeliveryClaim, outcome: DeliveryOutcome) -> None:
        """Record one attempt, fenced by the claim's token."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE deliveries SET state = ?, last_error = ?, delivered_at = ?,"
                " next_attempt_at = ?, lease_token = NULL, lease_expires_at = 0"
                " WHERE delivery_id = ? AND lease_token = ?",
                (
                    outcome.state.value,
                    outcome.last_error,
                    outcome.delivered_at,
                    outcome.next_attempt_at,
                    claim.delivery_id,
                    claim.token,
                ),
            )
            if cursor.rowcount != 1:
                raise LeaseLost.delivery(claim.delivery_id)

    @in_thread
    def list_deliveries(self, request_id: str) -> list[Delivery]:
        """Return a request's webhook deliveries."""
        with self._read() as conn:
            self._request(conn, request_id)
            rows = conn.execute(
                "SELECT * FROM deliveries WHERE request_id = ? ORDER BY rowid", (request_id,)
            ).fetchall()
        return [to_delivery(r) for r in rows]
