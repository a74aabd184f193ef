"""The SQLite store's plumbing: one connection, one thread, one transaction per
change (shared by the store's parts in :mod:`.sqlite` and :mod:`._sqlite_cache`)."""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from .._threads import ThreadLane
from ..errors import StorageError, StorageUnavailable
from ..model import ImageState, RequestStatus
from ._sqlite_schema import migrate

__all__ = ["PENDING", "QUEUED", "WORKING", "SqliteBase", "in_thread", "states_in"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


# Values the SQL compares with, and an IN list for a set of states.
QUEUED, WORKING = ImageState.QUEUED.value, ImageState.WORKING.value
PENDING = RequestStatus.PENDING.value


def states_in(states: frozenset[ImageState]) -> tuple[str, list[str]]:
    """Return an ``IN (?, ...)`` list and its values for a set of states."""
    values = sorted(s.value for s in states)
    return f"({', '.join('?' * len(values))})", values


def in_thread(method: Callable[_P, _T]) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """Run a blocking store method in the store's thread, one at a time."""

    @functools.wraps(method)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        store = args[0]
        assert isinstance(store, SqliteBase)
        return await store._lane.run(functools.partial(method, *args, **kwargs))

    return wrapper


class SqliteBase:
    """One SQLite file opened in WAL mode, used from one worker thread at a time."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 30) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._lane = ThreadLane(1, "imgcompress-sqlite")

    # -- plumbing ---------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path.parent != Path():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
            )
            try:
                conn.row_factory = sqlite3.Row
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
                raise StorageError(
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

    @in_thread
    def open(self) -> None:
        """Create the file and its tables, or bring an older file up to date."""
        with self._read() as conn:
            migrate(conn)

    @in_thread
    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @in_thread
    def ping(self) -> None:
        """Raise StorageUnavailable unless the file answers a query."""
        with self._read() as conn:
            conn.execute("SELECT 1").fetchone()
