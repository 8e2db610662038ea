"""One SQLite file shared by a service's threads: a locked connection, WAL, explicit write transactions.

Both services' tables (uploads + outbox, jobs) stand on this, so a read-then-write (a duplicate check
and its insert, a status transition, a job claim) always holds SQLite's write lock throughout.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from salesflow.errors import StorageFullError

__all__ = ["SqliteFile"]


class SqliteFile:
    """A connection behind a lock; subclasses add their schema and queries."""

    def __init__(self, path: Path, *, busy_timeout_s: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        # isolation_level=None: autocommit; multi-statement changes use explicit BEGIN IMMEDIATE.
        # timeout: how long to wait for another process holding the write lock.
        self._conn = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=busy_timeout_s
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """The rows of a read-only query (reports such as a service's /metrics)."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed on success, rolled back on any exception."""
        with self._lock, self._full_disk_as_storage_full():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # a failed COMMIT may have rolled back
                    self._conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _full_disk_as_storage_full(self) -> Iterator[None]:
        """SQLite's "database or disk is full" as StorageFullError (507), saying what to do."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
                raise
            raise StorageFullError(
                f"the disk that holds {self.path.name} is full, so nothing was recorded; free "
                "space there (or move SALESFLOW_DATA_DIR to a larger disk) and try again"
            ) from None
