"""An SQLite file written by the previous version (schema 1: bytes per image id, a
countdown of unfinished images) opens with this one: the bytes move into content-addressed
blobs and every image and request reads back."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from imgcompress_core import SqliteStorage
from imgcompress_core.model import ImageState, RequestStatus
from imgcompress_core.stores._sqlite_schema import SCHEMA_VERSION
from imgcompress_core.workflow import Leasing, Workflow

pytestmark = pytest.mark.anyio

V1_SCHEMA = """
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


def write_version_1(path: Path) -> None:
    """Write a version-1 file: one finished request with a done and a failed image, and
    one Pending request with a queued image."""
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA)
        requests = [("done1", "Completed", 2, 0, 1.0), ("wait1", "Pending", 1, 1, None)]
        for rid, status, total, remaining, finished in requests:
            db.execute(
                "INSERT INTO requests (request_id, status, columns, webhook_url, created_at,"
                " updated_at, finished_at, total_images, remaining)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rid,
                    status,
                    json.dumps(["S. No.", "Product Name"]),
                    None,
                    1.0,
                    1.0,
                    finished,
                    total,
                    remaining,
                ),
            )
            db.execute(
                "INSERT INTO products (request_id, row, serial, name, cells)"
                " VALUES (?, 2, '1', 'A', ?)",
                (rid, json.dumps(["1", "A"])),
            )
        images = [
            ("img-done", "done1", 0, "done"),
            ("img-failed", "done1", 1, "failed"),
            ("img-queued", "wait1", 0, "queued"),
        ]
        for image_id, rid, position, state in images:
            db.execute(
                "INSERT INTO images (image_id, request_id, row, position, url, state, updated_at,"
                " content_type, output_bytes)"
                " VALUES (?, ?, 2, ?, 'https://img.example/a.jpg', ?, 1.0, ?, ?)",
                (
                    image_id,
                    rid,
                    position,
                    state,
                    "image/jpeg" if state == "done" else None,
                    5 if state == "done" else None,
                ),
            )
        db.execute(
            "INSERT INTO image_data (image_id, data, content_type, etag)"
            " VALUES ('img-done', ?, 'image/jpeg', 'x')",
            (b"\xff\xd8jpeg",),
        )


async def test_a_version_1_file_is_brought_up_to_date(tmp_path: Path) -> None:
    """The done image is served from a blob, the Pending request's image can be claimed,
    and the file says it is at the current version."""
    path = tmp_path / "old.sqlite3"
    write_version_1(path)
    store = SqliteStorage(path)
    await store.open()
    try:
        flow = Workflow.over(store)
        served = await flow.image("img-done")
        assert served.data == b"\xff\xd8jpeg"
        assert served.etag == hashlib.sha256(b"\xff\xd8jpeg").hexdigest()[:32]
        assert (await store.get_request("done1")).status is RequestStatus.COMPLETED
        images = {i.image_id: i.state for i in await store.list_images("done1")}
        assert images == {"img-done": ImageState.DONE, "img-failed": ImageState.FAILED}
        [claim] = await flow.claim("w", 5, Leasing())
        assert claim.image_id == "img-queued"
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "image_data" not in tables and "blobs" in tables
    again = SqliteStorage(path)
    await again.open()  # opening an up-to-date file again changes nothing
    assert (await again.get_request("wait1")).status is RequestStatus.PENDING
    await again.close()
