"""The embedded default Storage: one SQLite file, durable, no server.

The web process and any number of worker processes may open the same file: the
database runs in WAL mode, every change is one ``BEGIN IMMEDIATE`` transaction, and
claims are conditional updates (``UPDATE ... WHERE state = 'queued' ... RETURNING``), so
two processes never get the same image. Blocking sqlite3 calls run in a worker thread,
one at a time per store, so the event loop never waits on the disk.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.to_thread

from ..errors import (
    IdempotencyConflict,
    ImageNotFound,
    ImgCompressError,
    LeaseLost,
    RequestNotFound,
    StorageUnavailable,
)
from ..model import (
    Claim,
    Delivery,
    DeliveryClaim,
    DeliveryState,
    Failure,
    ImageRecord,
    ImageResult,
    ImageState,
    NewRequest,
    ProductRecord,
    Progress,
    RequestRecord,
    RequestStatus,
    StoredImage,
    new_id,
)
from ..workflow import (
    CANCELLED,
    WORKER_LOST,
    check_transition,
    delivery_outcome,
    final_status,
)

__all__ = ["SqliteStorage"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    request_id   TEXT PRIMARY KEY,
    status       TEXT NOT NULL,
    columns      TEXT NOT NULL,
    webhook_url  TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    finished_at  REAL,
    total_images INTEGER NOT NULL,
    remaining    INTEGER NOT NULL,
    base_url     TEXT NOT NULL DEFAULT '',
    owner        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS requests_unfinalized ON requests (status, remaining);
CREATE INDEX IF NOT EXISTS requests_finished ON requests (finished_at);
CREATE TABLE IF NOT EXISTS products (
    request_id TEXT NOT NULL,
    row        INTEGER NOT NULL,
    serial     TEXT NOT NULL,
    name       TEXT NOT NULL,
    cells      TEXT NOT NULL,
    PRIMARY KEY (request_id, row)
);
CREATE TABLE IF NOT EXISTS images (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id         TEXT NOT NULL UNIQUE,
    request_id       TEXT NOT NULL,
    row              INTEGER NOT NULL,
    position         INTEGER NOT NULL,
    url              TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_token      TEXT,
    lease_expires_at REAL NOT NULL DEFAULT 0,
    not_before       REAL NOT NULL DEFAULT 0,
    failure_code     TEXT,
    failure_message  TEXT,
    input_bytes      INTEGER,
    output_bytes     INTEGER,
    width            INTEGER,
    height           INTEGER,
    content_type     TEXT,
    note             TEXT,
    updated_at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS images_by_request ON images (request_id, row, position);
CREATE INDEX IF NOT EXISTS images_by_state ON images (request_id, state);
CREATE INDEX IF NOT EXISTS images_queued ON images (state, seq);
CREATE INDEX IF NOT EXISTS images_leased ON images (state, lease_expires_at);
CREATE TABLE IF NOT EXISTS image_data (
    image_id     TEXT PRIMARY KEY,
    data         BLOB NOT NULL,
    content_type TEXT NOT NULL,
    etag         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id      TEXT PRIMARY KEY,
    request_id       TEXT NOT NULL,
    url              TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL,
    last_error       TEXT,
    delivered_at     REAL,
    lease_token      TEXT,
    lease_expires_at REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS idempotency (
    key        TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    body_hash  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_by_request ON deliveries (request_id);
PRAGMA user_version = 1;
"""

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _in_thread(method: Callable[_P, _T]) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """Run a blocking store method in a worker thread, one at a time per store."""

    @functools.wraps(method)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        store = args[0]
        assert isinstance(store, SqliteStorage)
        call = functools.partial(method, *args, **kwargs)
        return await anyio.to_thread.run_sync(call, limiter=store._limiter)

    return wrapper


class SqliteStorage:
    """Storage in one SQLite file, shared safely by several processes."""

    def __init__(
        self, path: str | Path, *, clock: Callable[[], float] = time.time, busy_timeout: float = 30
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(1)

    # -- plumbing ---------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path.parent != Path():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._connect()
            except sqlite3.IntegrityError as exc:
                raise ImgCompressError(
                    f"the SQLite store {self.path} refused a write: {exc}", code="storage_conflict"
                ) from exc
            except sqlite3.Error as exc:
                raise StorageUnavailable(f"the SQLite store {self.path} failed: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._read() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:
                    conn.rollback()

    # -- lifecycle --------------------------------------------------------------------

    @_in_thread
    def open(self) -> None:
        """Create the file and its tables if they do not exist."""
        with self._read() as conn:
            conn.executescript(_SCHEMA)

    @_in_thread
    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @_in_thread
    def ping(self) -> None:
        """Raise StorageUnavailable unless the file answers a query."""
        with self._read() as conn:
            conn.execute("SELECT 1").fetchone()

    # -- requests ---------------------------------------------------------------------

    @_in_thread
    def create_request(self, request: NewRequest) -> str:
        """Store a request with its products and queued images in one transaction (or find
        the earlier request made with the same Idempotency-Key)."""
        now = self._clock()
        with self._write() as conn:
            if request.idempotency_key is not None:
                earlier = conn.execute(
                    "SELECT request_id, body_hash FROM idempotency WHERE key = ?",
                    (request.idempotency_key,),
                ).fetchone()
                if earlier is not None:
                    if earlier[1] != request.body_hash:
                        raise IdempotencyConflict(
                            "this Idempotency-Key was already used for a different upload"
                        )
                    return str(earlier[0])
                conn.execute(
                    "INSERT INTO idempotency (key, request_id, body_hash) VALUES (?, ?, ?)",
                    (request.idempotency_key, request.request_id, request.body_hash),
                )
            conn.execute(
                "INSERT INTO requests (request_id, status, columns, webhook_url, created_at,"
                " updated_at, total_images, remaining, base_url, owner)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    request.request_id,
                    RequestStatus.PENDING.value,
                    json.dumps(request.columns),
                    request.webhook_url,
                    request.created_at,
                    now,
                    len(request.images),
                    len(request.images),
                    request.base_url,
                    request.owner,
                ),
            )
            conn.executemany(
                "INSERT INTO products (request_id, row, serial, name, cells)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    (request.request_id, p.row, p.serial, p.name, json.dumps(p.cells))
                    for p in request.products
                ),
            )
            conn.executemany(
                "INSERT INTO images (image_id, request_id, row, position, url, state, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        i.image_id,
                        request.request_id,
                        i.row,
                        i.position,
                        i.url,
                        ImageState.QUEUED.value,
                        now,
                    )
                    for i in request.images
                ),
            )
        return request.request_id

    def _request(self, conn: sqlite3.Connection, request_id: str) -> RequestRecord:
        row = conn.execute(
            "SELECT request_id, status, columns, webhook_url, created_at, updated_at,"
            " finished_at, total_images, base_url, owner FROM requests WHERE request_id = ?",
            (request_id,),
        ).fetchone()
        if row is None:
            raise RequestNotFound(request_id)
        return RequestRecord(
            request_id=row[0],
            status=RequestStatus(row[1]),
            columns=tuple(json.loads(row[2])),
            webhook_url=row[3],
            created_at=row[4],
            updated_at=row[5],
            finished_at=row[6],
            total_images=row[7],
            base_url=row[8],
            owner=row[9],
        )

    @_in_thread
    def get_request(self, request_id: str) -> RequestRecord:
        """Return a request or raise RequestNotFound."""
        with self._read() as conn:
            return self._request(conn, request_id)

    @_in_thread
    def list_products(self, request_id: str) -> list[ProductRecord]:
        """Return a request's products in row order."""
        with self._read() as conn:
            self._request(conn, request_id)
            rows = conn.execute(
                "SELECT row, serial, name, cells FROM products WHERE request_id = ? ORDER BY row",
                (request_id,),
            ).fetchall()
        return [ProductRecord(request_id, r[0], r[1], r[2], tuple(json.loads(r[3]))) for r in rows]

    @_in_thread
    def list_images(self, request_id: str) -> list[ImageRecord]:
        """Return a request's images ordered by row, then position."""
        with self._read() as conn:
            self._request(conn, request_id)
            rows = conn.execute(
                "SELECT image_id, row, position, url, state, attempts, failure_code,"
                " failure_message, input_bytes, output_bytes, width, height, content_type, note,"
                " updated_at FROM images WHERE request_id = ? ORDER BY row, position",
                (request_id,),
            ).fetchall()
        return [
            ImageRecord(
                image_id=r[0],
                request_id=request_id,
                row=r[1],
                position=r[2],
                url=r[3],
                state=ImageState(r[4]),
                attempts=r[5],
                failure=Failure(r[6], r[7]) if r[6] is not None else None,
                input_bytes=r[8],
                output_bytes=r[9],
                width=r[10],
                height=r[11],
                content_type=r[12],
                note=r[13],
                updated_at=r[14],
            )
            for r in rows
        ]

    def _progress(self, conn: sqlite3.Connection, request_id: str) -> Progress:
        counts = dict(
            conn.execute(
                "SELECT state, COUNT(*) FROM images WHERE request_id = ? GROUP BY state",
                (request_id,),
            ).fetchall()
        )
        return Progress(
            total=sum(counts.values()),
            queued=counts.get(ImageState.QUEUED.value, 0),
            working=counts.get(ImageState.WORKING.value, 0),
            done=counts.get(ImageState.DONE.value, 0),
            failed=counts.get(ImageState.FAILED.value, 0),
        )

    @_in_thread
    def progress(self, request_id: str) -> Progress:
        """Count a request's images by state."""
        with self._read() as conn:
            self._request(conn, request_id)
            return self._progress(conn, request_id)

    # -- images -----------------------------------------------------------------------

    @_in_thread
    def claim_images(
        self, owner: str, limit: int, lease_seconds: float, max_attempts: int
    ) -> list[Claim]:
        """Lease up to ``limit`` images: expired leases first, then the queue in order."""
        now = self._clock()
        token = new_id()
        working = ImageState.WORKING.value
        lease = (working, owner, token, now + lease_seconds, now)
        claim = (
            "UPDATE images SET state = ?, attempts = attempts + 1, lease_owner = ?,"
            " lease_token = ?, lease_expires_at = ?, updated_at = ? WHERE seq IN ({})"
            " RETURNING image_id, request_id, url, attempts"
        )
        with self._write() as conn:
            lost = conn.execute(
                "UPDATE images SET state = ?, failure_code = ?, failure_message = ?,"
                " lease_token = NULL, updated_at = ?"
                " WHERE state = ? AND lease_expires_at <= ? AND attempts >= ?"
                " RETURNING request_id",
                (
                    ImageState.FAILED.value,
                    WORKER_LOST.code,
                    WORKER_LOST.message,
                    now,
                    working,
                    now,
                    max_attempts,
                ),
            ).fetchall()
            for (request_id,) in lost:
                self._one_less(conn, request_id)
            rows = conn.execute(
                claim.format(
                    "SELECT seq FROM images WHERE state = ? AND lease_expires_at <= ?"
                    " ORDER BY seq LIMIT ?"
                ),
                (*lease, working, now, limit),
            ).fetchall()
            if len(rows) < limit:
                rows += conn.execute(
                    claim.format(
                        "SELECT seq FROM images WHERE state = ? AND not_before <= ?"
                        " ORDER BY seq LIMIT ?"
                    ),
                    (*lease, ImageState.QUEUED.value, now, limit - len(rows)),
                ).fetchall()
        return [Claim(r[0], r[1], r[2], r[3], token) for r in rows]

    @_in_thread
    def renew_claims(self, claims: Sequence[Claim], lease_seconds: float) -> list[Claim]:
        """Extend the leases these claims still hold; return those."""
        expires = self._clock() + lease_seconds
        held = []
        with self._write() as conn:
            for claim in claims:
                cursor = conn.execute(
                    "UPDATE images SET lease_expires_at = ? WHERE image_id = ? AND lease_token = ?"
                    " AND state = ?",
                    (expires, claim.image_id, claim.token, ImageState.WORKING.value),
                )
                if cursor.rowcount == 1:
                    held.append(claim)
        return held

    @staticmethod
    def _one_less(conn: sqlite3.Connection, request_id: str) -> None:
        """Count one more final image against its request."""
        conn.execute(
            "UPDATE requests SET remaining = remaining - 1 WHERE request_id = ?", (request_id,)
        )

    def _finish(self, conn: sqlite3.Connection, claim: Claim, target: ImageState) -> None:
        """Raise LeaseLost unless the claim still owns the image, IllegalTransition unless the
        image may move to ``target``."""
        row = conn.execute(
            "SELECT state, lease_token FROM images WHERE image_id = ?", (claim.image_id,)
        ).fetchone()
        if row is None or row[1] != claim.token:
            raise LeaseLost(f"image {claim.image_id} is no longer held by this claim")
        check_transition(ImageState(row[0]), target)

    @_in_thread
    def complete_image(self, claim: Claim, result: ImageResult) -> None:
        """Store the processed bytes and mark the image done, in one transaction."""
        etag = hashlib.sha256(result.data).hexdigest()[:32]
        with self._write() as conn:
            row = conn.execute(
                "SELECT state, lease_token FROM images WHERE image_id = ?", (claim.image_id,)
            ).fetchone()
            if row is not None and row[0] == ImageState.DONE.value and row[1] == claim.token:
                return  # the same claim finishing twice: already done
            self._finish(conn, claim, ImageState.DONE)
            conn.execute(
                "INSERT OR REPLACE INTO image_data (image_id, data, content_type, etag)"
                " VALUES (?, ?, ?, ?)",
                (claim.image_id, result.data, result.content_type, etag),
            )
            conn.execute(
                "UPDATE images SET state = ?, failure_code = NULL, failure_message = NULL,"
                " input_bytes = ?, output_bytes = ?, width = ?, height = ?, content_type = ?,"
                " note = ?, updated_at = ? WHERE image_id = ?",
                (
                    ImageState.DONE.value,
                    result.input_bytes,
                    len(result.data),
                    result.width,
                    result.height,
                    result.content_type,
                    result.note,
                    self._clock(),
                    claim.image_id,
                ),
            )
            self._one_less(conn, claim.request_id)

    @_in_thread
    def fail_image(self, claim: Claim, failure: Failure) -> None:
        """Mark the image failed for good."""
        with self._write() as conn:
            self._finish(conn, claim, ImageState.FAILED)
            conn.execute(
                "UPDATE images SET state = ?, failure_code = ?, failure_message = ?,"
                " updated_at = ? WHERE image_id = ?",
                (
                    ImageState.FAILED.value,
                    failure.code,
                    failure.message,
                    self._clock(),
                    claim.image_id,
                ),
            )
            self._one_less(conn, claim.request_id)

    @_in_thread
    def retry_image(self, claim: Claim, failure: Failure, not_before: float) -> None:
        """Queue the image again after ``not_before``."""
        with self._write() as conn:
            self._finish(conn, claim, ImageState.QUEUED)
            conn.execute(
                "UPDATE images SET state = ?, failure_code = ?, failure_message = ?,"
                " lease_token = NULL, lease_expires_at = 0, not_before = ?, updated_at = ?"
                " WHERE image_id = ?",
                (
                    ImageState.QUEUED.value,
                    failure.code,
                    failure.message,
                    not_before,
                    self._clock(),
                    claim.image_id,
                ),
            )

    @_in_thread
    def finalize_request(self, request_id: str) -> RequestRecord | None:
        """Set the final status once; queue the webhook delivery in the same transaction."""
        with self._write() as conn:
            request = self._request(conn, request_id)
            if request.status is not RequestStatus.PENDING:
                return None
            (remaining,) = conn.execute(
                "SELECT remaining FROM requests WHERE request_id = ?", (request_id,)
            ).fetchone()
            if remaining > 0:
                return None
            status = final_status(self._progress(conn, request_id))
            if status is None:
                return None
            now = self._clock()
            conn.execute(
                "UPDATE requests SET status = ?, updated_at = ?, finished_at = ?"
                " WHERE request_id = ?",
                (status.value, now, now, request_id),
            )
            if request.webhook_url:
                conn.execute(
                    "INSERT INTO deliveries (delivery_id, request_id, url, state, next_attempt_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (new_id(), request_id, request.webhook_url, DeliveryState.PENDING.value, now),
                )
            return self._request(conn, request_id)

    @_in_thread
    def unfinalized_requests(self, limit: int) -> list[str]:
        """Return Pending requests with no image left to finish."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT request_id FROM requests WHERE status = ? AND remaining <= 0 LIMIT ?",
                (RequestStatus.PENDING.value, limit),
            ).fetchall()
        return [r[0] for r in rows]

    @_in_thread
    def queue_depth(self) -> int:
        """Count queued images."""
        with self._read() as conn:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM images WHERE state = ?", (ImageState.QUEUED.value,)
            ).fetchone()
        return int(count)

    @_in_thread
    def cancel_request(self, request_id: str) -> None:
        """Fail every unfinished image with ``cancelled`` in one transaction."""
        with self._write() as conn:
            self._request(conn, request_id)
            cancelled = conn.execute(
                "UPDATE images SET state = ?, failure_code = ?, failure_message = ?,"
                " lease_token = NULL, updated_at = ? WHERE request_id = ? AND state IN (?, ?)",
                (
                    ImageState.FAILED.value,
                    CANCELLED.code,
                    CANCELLED.message,
                    self._clock(),
                    request_id,
                    ImageState.QUEUED.value,
                    ImageState.WORKING.value,
                ),
            ).rowcount
            conn.execute(
                "UPDATE requests SET remaining = remaining - ? WHERE request_id = ?",
                (cancelled, request_id),
            )

    @_in_thread
    def delete_request(self, request_id: str) -> None:
        """Remove the request and everything stored for it."""
        with self._write() as conn:
            self._request(conn, request_id)
            conn.execute(
                "DELETE FROM image_data WHERE image_id IN"
                " (SELECT image_id FROM images WHERE request_id = ?)",
                (request_id,),
            )
            for table in ("images", "products", "deliveries", "idempotency", "requests"):
                conn.execute(f"DELETE FROM {table} WHERE request_id = ?", (request_id,))

    @_in_thread
    def finished_before(self, cutoff: float, limit: int) -> list[str]:
        """Return final requests that finished before ``cutoff``."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT request_id FROM requests WHERE status != ? AND finished_at < ? LIMIT ?",
                (RequestStatus.PENDING.value, cutoff, limit),
            ).fetchall()
        return [r[0] for r in rows]

    @_in_thread
    def get_image_data(self, image_id: str) -> StoredImage:
        """Return a processed image's bytes or raise ImageNotFound."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT data, content_type, etag FROM image_data WHERE image_id = ?", (image_id,)
            ).fetchone()
        if row is None:
            raise ImageNotFound(image_id)
        return StoredImage(image_id, bytes(row[0]), row[1], row[2])

    # -- webhook deliveries -----------------------------------------------------------

    @_in_thread
    def claim_deliveries(self, owner: str, limit: int, lease_seconds: float) -> list[DeliveryClaim]:
        """Lease up to ``limit`` due deliveries in one conditional update."""
        now = self._clock()
        token = new_id()
        with self._write() as conn:
            rows = conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, lease_token = ?,"
                " lease_expires_at = ? WHERE delivery_id IN ("
                " SELECT delivery_id FROM deliveries WHERE state = ? AND next_attempt_at <= ?"
                " AND lease_expires_at <= ? LIMIT ?)"
                " RETURNING delivery_id, request_id, url, attempts",
                (token, now + lease_seconds, DeliveryState.PENDING.value, now, now, limit),
            ).fetchall()
        return [DeliveryClaim(r[0], r[1], r[2], r[3], token) for r in rows]

    @_in_thread
    def record_delivery(
        self,
        claim: DeliveryClaim,
        *,
        delivered: bool,
        error: str | None,
        next_attempt_at: float | None,
    ) -> None:
        """Record one delivery attempt."""
        now = self._clock()
        state, when = delivery_outcome(delivered, next_attempt_at, now)
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE deliveries SET state = ?, last_error = ?, delivered_at = ?,"
                " next_attempt_at = ?, lease_token = NULL, lease_expires_at = 0"
                " WHERE delivery_id = ? AND lease_token = ?",
                (
                    state.value,
                    error,
                    when,
                    next_attempt_at if next_attempt_at is not None else now,
                    claim.delivery_id,
                    claim.token,
                ),
            )
            if cursor.rowcount != 1:
                raise LeaseLost(f"delivery {claim.delivery_id} is no longer held by this claim")

    @_in_thread
    def list_deliveries(self, request_id: str) -> list[Delivery]:
        """Return a request's webhook deliveries."""
        with self._read() as conn:
            self._request(conn, request_id)
            rows = conn.execute(
                "SELECT delivery_id, url, state, attempts, next_attempt_at, last_error,"
                " delivered_at FROM deliveries WHERE request_id = ? ORDER BY rowid",
                (request_id,),
            ).fetchall()
        return [
            Delivery(r[0], request_id, r[1], DeliveryState(r[2]), r[3], r[4], r[5], r[6])
            for r in rows
        ]
