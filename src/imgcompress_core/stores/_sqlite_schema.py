"""The SQLite store's tables, their upgrades, and the one place rows become records.

Rows are read with :class:`sqlite3.Row` and mapped by column name here, so a column
added or moved never shifts a field.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time

from ..model import (
    Delivery,
    DeliveryState,
    Failure,
    ImageRecord,
    ImageState,
    Output,
    ProductRecord,
    RequestRecord,
    RequestStatus,
    Source,
)

__all__ = [
    "SCHEMA_VERSION",
    "migrate",
    "to_delivery",
    "to_image",
    "to_output",
    "to_product",
    "to_request",
    "to_source",
]

SCHEMA_VERSION = 2

_TABLES = """
CREATE TABLE IF NOT EXISTS requests (
    request_id   TEXT PRIMARY KEY,
    status       TEXT NOT NULL,
    columns      TEXT NOT NULL,
    webhook_url  TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    finished_at  REAL,
    total_images INTEGER NOT NULL,
    base_url     TEXT NOT NULL DEFAULT '',
    owner        TEXT NOT NULL DEFAULT '',
    claimed_at   REAL NOT NULL DEFAULT 0,
    policy       TEXT NOT NULL DEFAULT '',
    round        INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS requests_finished ON requests (finished_at);
CREATE INDEX IF NOT EXISTS requests_newest ON requests (owner, created_at, request_id);
CREATE INDEX IF NOT EXISTS requests_newest_all ON requests (created_at, request_id);
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
    host             TEXT NOT NULL DEFAULT '',
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
    updated_at       REAL NOT NULL,
    blob_key         TEXT,
    output_id        TEXT,
    reused           TEXT,
    quality          INTEGER,
    score            REAL,
    warnings         TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS images_blob ON images (blob_key);
CREATE INDEX IF NOT EXISTS images_output ON images (output_id);
CREATE INDEX IF NOT EXISTS images_by_request ON images (request_id, row, position);
CREATE INDEX IF NOT EXISTS images_by_state ON images (request_id, state, seq);
CREATE INDEX IF NOT EXISTS images_working ON images (state, lease_expires_at);
CREATE TABLE IF NOT EXISTS blobs (
    key          TEXT PRIMARY KEY,
    data         BLOB NOT NULL,
    content_type TEXT NOT NULL,
    written_at   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS blobs_written ON blobs (written_at);
CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id      TEXT PRIMARY KEY,
    request_id       TEXT NOT NULL,
    url              TEXT NOT NULL,
    host             TEXT NOT NULL DEFAULT '',
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  REAL NOT NULL,
    last_error       TEXT,
    delivered_at     REAL,
    lease_token      TEXT,
    lease_expires_at REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_by_request ON deliveries (request_id);
CREATE TABLE IF NOT EXISTS sources (
    owner         TEXT NOT NULL,
    url           TEXT NOT NULL,
    input_hash    TEXT NOT NULL,
    etag          TEXT,
    last_modified TEXT,
    fetched_at    REAL NOT NULL,
    request_id    TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (owner, url)
);
CREATE INDEX IF NOT EXISTS sources_by_hash ON sources (owner, input_hash);
CREATE TABLE IF NOT EXISTS outputs (
    output_id    TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    policy       TEXT NOT NULL,
    input_hash   TEXT NOT NULL,
    blob_key     TEXT NOT NULL,
    content_type TEXT NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    input_bytes  INTEGER NOT NULL,
    output_bytes INTEGER NOT NULL,
    note         TEXT,
    quality      INTEGER,
    score        REAL,
    warnings     TEXT NOT NULL DEFAULT '[]',
    last_used_at REAL NOT NULL,
    UNIQUE (owner, policy, input_hash)
);
CREATE INDEX IF NOT EXISTS outputs_blob ON outputs (blob_key);
CREATE INDEX IF NOT EXISTS outputs_used ON outputs (last_used_at);
CREATE TABLE IF NOT EXISTS idempotency (
    key        TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    body_hash  TEXT NOT NULL
);
"""

# Version 1 kept each image's bytes in image_data (keyed by image id) and a per-request
# countdown of unfinished images; version 2 keeps content-addressed blobs.
_FROM_1 = """
ALTER TABLE requests ADD COLUMN claimed_at REAL NOT NULL DEFAULT 0;
ALTER TABLE images ADD COLUMN blob_key TEXT;
ALTER TABLE images ADD COLUMN host TEXT NOT NULL DEFAULT '';
ALTER TABLE requests ADD COLUMN policy TEXT NOT NULL DEFAULT '';
ALTER TABLE requests ADD COLUMN round INTEGER NOT NULL DEFAULT 1;
ALTER TABLE images ADD COLUMN output_id TEXT;
ALTER TABLE images ADD COLUMN reused TEXT;
ALTER TABLE images ADD COLUMN quality INTEGER;
ALTER TABLE images ADD COLUMN score REAL;
ALTER TABLE images ADD COLUMN warnings TEXT NOT NULL DEFAULT '[]';
DROP INDEX IF EXISTS requests_unfinalized;
ALTER TABLE requests DROP COLUMN remaining;
DROP INDEX IF EXISTS images_queued;
DROP INDEX IF EXISTS images_leased;
DROP INDEX IF EXISTS images_by_state;
"""


def migrate(conn: sqlite3.Connection) -> None:
    """Create the tables, or bring a version-1 file up to date, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version == 1:
            for statement in _FROM_1.strip().split(";"):
                if statement.strip():
                    conn.execute(statement)
            _move_image_data(conn)
        for statement in _TABLES.strip().split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.rollback()


def _move_image_data(conn: sqlite3.Connection) -> None:
    """Move version 1's per-image bytes into content-addressed blobs."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, data BLOB NOT NULL,"
        " content_type TEXT NOT NULL, written_at REAL NOT NULL)"
    )
    now = time.time()
    for image_id, data, content_type in conn.execute(
        "SELECT image_id, data, content_type FROM image_data"
    ).fetchall():
        key = hashlib.sha256(data).hexdigest()
        conn.execute(
            "INSERT OR IGNORE INTO blobs (key, data, content_type, written_at) VALUES (?, ?, ?, ?)",
            (key, data, content_type, now),
        )
        conn.execute("UPDATE images SET blob_key = ? WHERE image_id = ?", (key, image_id))
    conn.execute("DROP TABLE image_data")


def to_request(row: sqlite3.Row) -> RequestRecord:
    """Return the record of a ``requests`` row."""
    return RequestRecord(
        request_id=row["request_id"],
        status=RequestStatus(row["status"]),
        columns=tuple(json.loads(row["columns"])),
        webhook_url=row["webhook_url"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        total_images=row["total_images"],
        base_url=row["base_url"],
        owner=row["owner"],
        policy=row["policy"],
        round=row["round"],
    )


def to_product(row: sqlite3.Row) -> ProductRecord:
    """Return the record of a ``products`` row."""
    return ProductRecord(
        row["request_id"], row["row"], row["serial"], row["name"], tuple(json.loads(row["cells"]))
    )


def to_image(row: sqlite3.Row) -> ImageRecord:
    """Return the record of an ``images`` row."""
    code = row["failure_code"]
    return ImageRecord(
        image_id=row["image_id"],
        request_id=row["request_id"],
        row=row["row"],
        position=row["position"],
        url=row["url"],
        state=ImageState(row["state"]),
        attempts=row["attempts"],
        failure=Failure(code, row["failure_message"] or "") if code is not None else None,
        input_bytes=row["input_bytes"],
        output_bytes=row["output_bytes"],
        width=row["width"],
        height=row["height"],
        content_type=row["content_type"],
        note=row["note"],
        updated_at=row["updated_at"],
        blob_key=row["blob_key"],
        output_id=row["output_id"],
        reused=row["reused"],
        quality=row["quality"],
        score=row["score"],
        warnings=tuple(json.loads(row["warnings"])),
    )


def to_output(row: sqlite3.Row) -> Output:
    """Return the record of an ``outputs`` row."""
    return Output(
        output_id=row["output_id"],
        owner=row["owner"],
        policy=row["policy"],
        input_hash=row["input_hash"],
        blob_key=row["blob_key"],
        content_type=row["content_type"],
        width=row["width"],
        height=row["height"],
        input_bytes=row["input_bytes"],
        output_bytes=row["output_bytes"],
        note=row["note"],
        quality=row["quality"],
        score=row["score"],
        warnings=tuple(json.loads(row["warnings"])),
        last_used_at=row["last_used_at"],
    )


def to_source(row: sqlite3.Row) -> Source:
    """Return the record of a ``sources`` row."""
    return Source(
        owner=row["owner"],
        url=row["url"],
        input_hash=row["input_hash"],
        etag=row["etag"],
        last_modified=row["last_modified"],
        fetched_at=row["fetched_at"],
        request_id=row["request_id"],
    )


def to_delivery(row: sqlite3.Row) -> Delivery:
    """Return the record of a ``deliveries`` row."""
    return Delivery(
        delivery_id=row["delivery_id"],
        request_id=row["request_id"],
        url=row["url"],
        state=DeliveryState(row["state"]),
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
        delivered_at=row["delivered_at"],
    )
