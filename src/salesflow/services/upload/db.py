"""The upload service's SQLite state: one row per upload and the transactional outbox of its events.

An upload row and its outbox event are written in ONE transaction, so an upload is never stored
without its event nor announced without its row. One connection guarded by a lock (SQLite
serialises writers anyway); WAL so readers never wait for the writer; parameterised SQL only.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from salesflow.errors import InputError, NotFoundError, ReportMismatchError
from salesflow.services.upload.record import NewUpload, UploadRecord
from salesflow.sqlite import SqliteFile

__all__ = [
    "STATUSES",
    "TERMINAL",
    "OutboxRow",
    "UploadDB",
    "utc_now",
]

log = logging.getLogger(__name__)

#: Status order: an update to a lower rank is stale and ignored; terminal statuses never change.
_RANK = {"stored": 0, "queued": 1, "training": 2, "trained": 3, "failed": 3, "rejected": 3}
STATUSES: tuple[str, ...] = tuple(_RANK)
TERMINAL = frozenset({"trained", "failed", "rejected"})
#: Longest error text kept on a row; callers' messages are short, this bounds a misbehaving one.
MAX_ERROR_CHARS = 2000
#: How long a second process (the CLI, a restarted service) waits for the write lock.
_BUSY_TIMEOUT_MS = 5000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    upload_id     TEXT PRIMARY KEY,
    key           TEXT NOT NULL,
    url           TEXT NOT NULL,
    size          INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    filename      TEXT NOT NULL,
    status        TEXT NOT NULL,
    job_id        TEXT,
    model_version TEXT,
    metrics       TEXT,
    error_code    TEXT,
    error         TEXT,
    preview       TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    reconciled_at TEXT,
    mode          TEXT
);
CREATE INDEX IF NOT EXISTS uploads_sha256 ON uploads (sha256);
CREATE INDEX IF NOT EXISTS uploads_status ON uploads (status, updated_at);
CREATE TABLE IF NOT EXISTS outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    upload_id    TEXT NOT NULL,
    topic        TEXT NOT NULL,
    key          TEXT,
    payload      BLOB NOT NULL,
    created_at   TEXT NOT NULL,
    published_at TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (published_at, id);
"""

_COLUMNS = (
    "upload_id, key, url, size, sha256, filename, status, job_id, model_version, metrics, "
    "error_code, error, preview, created_at, updated_at, mode"
)


def utc_now() -> str:
    """Now as a sortable UTC ISO string with milliseconds."""
    return _iso(datetime.now(UTC))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class OutboxRow:
    """One event waiting to be published (or already published)."""

    id: int
    upload_id: str
    topic: str
    key: str | None
    payload: bytes
    attempts: int


class UploadDB(SqliteFile):
    """Uploads and their outbox in one SQLite file; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, busy_timeout_s=_BUSY_TIMEOUT_MS / 1000)
        self._conn.execute("PRAGMA foreign_keys=ON")
        with self._transaction() as conn:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            columns = {r["name"] for r in conn.execute("PRAGMA table_info(uploads)")}
            if "mode" not in columns:  # a table from before history modes
                conn.execute("ALTER TABLE uploads ADD COLUMN mode TEXT")

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def ping(self) -> None:
        """Raise if the database cannot be read."""
        self._query("SELECT 1 FROM uploads LIMIT 1")

    # --- uploads -------------------------------------------------------------------------------

    def add_upload(
        self, upload: NewUpload, event: bytes, topic: str, *, force: bool = False
    ) -> tuple[UploadRecord, bool]:
        """Insert an upload and its event atomically; `(record, duplicate)`.

        Unless `force`, an existing non-rejected upload with the same sha256 is returned instead
        (duplicate=True) and nothing is written: the check and the insert share one transaction,
        so two concurrent uploads of the same bytes cannot both be created.
        """
        now = upload.created_at
        with self._transaction() as conn:
            if not force:
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM uploads WHERE sha256 = ? AND status != 'rejected' "
                    "ORDER BY created_at LIMIT 1",
                    (upload.sha256,),
                ).fetchone()
                if row is not None:
                    return _record(row), True
            conn.execute(
                f"INSERT INTO uploads ({_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, 'stored', NULL, NULL, NULL, NULL, NULL, ?, ?, ?, ?)",
                (
                    upload.upload_id,
                    upload.key,
                    upload.url,
                    upload.size,
                    upload.sha256,
                    upload.filename,
                    json.dumps(upload.preview),
                    now,
                    now,
                    upload.mode,
                ),
            )
            _insert_event(conn, upload.upload_id, topic, event, now)
        return self.get(upload.upload_id), False

    def get(self, upload_id: str) -> UploadRecord:
        """One upload; NotFoundError if unknown."""
        rows = self._query(f"SELECT {_COLUMNS} FROM uploads WHERE upload_id = ?", (upload_id,))
        if not rows:
            raise NotFoundError(f"no upload {upload_id[:80]!r}")
        return _record(rows[0])

    def recent(self, *, limit: int = 100, status: str | None = None) -> list[UploadRecord]:
        """Uploads, newest first, optionally only those with `status`."""
        where, params = ("WHERE status = ?", (status,)) if status else ("", ())
        rows = self._query(
            f"SELECT {_COLUMNS} FROM uploads {where} ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (*params, limit),
        )
        return [_record(row) for row in rows]

    def update_status(
        self, upload_id: str, status: str, **fields: Any
    ) -> tuple[UploadRecord, bool]:
        """Apply a status report if it moves the upload forward; `(record, applied)`.

        Terminal uploads never change; a report older than the current status (queued after
        training) is ignored. Fields given as None keep their stored value. A report that names
        the file (`sha256`, `size`: the event it came from) must name this upload's file, and a
        rejection must name it: a forged or corrupt event naming a real upload id can never
        reject that upload (ReportMismatchError, HTTP 409).
        """
        if status not in _RANK or status == "stored":
            raise ValueError(f"not a reportable status: {status!r}")
        claim = (fields.get("sha256"), fields.get("size"))
        if status == "rejected" and None in claim:
            raise InputError("a rejection must carry the event's sha256 and size")
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM uploads WHERE upload_id = ?", (upload_id,)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no upload {upload_id[:80]!r}")
            if claim != (None, None) and claim != (row["sha256"], row["size"]):
                raise ReportMismatchError(
                    f"the {status} report is about another file than upload {upload_id}: "
                    "the event it came from does not match the upload's sha256 and size"
                )
            current = row["status"]
            if current in TERMINAL or _RANK[status] < _RANK[current]:
                return _record(row), False
            metrics = fields.get("metrics")
            error = fields.get("error")
            conn.execute(
                "UPDATE uploads SET status = ?, job_id = COALESCE(?, job_id), "
                "model_version = COALESCE(?, model_version), metrics = COALESCE(?, metrics), "
                "error_code = COALESCE(?, error_code), error = COALESCE(?, error), "
                "updated_at = ? WHERE upload_id = ?",
                (
                    status,
                    fields.get("job_id"),
                    fields.get("model_version"),
                    json.dumps(metrics) if metrics is not None else None,
                    fields.get("error_code"),
                    error[:MAX_ERROR_CHARS] if isinstance(error, str) else None,
                    utc_now(),
                    upload_id,
                ),
            )
        return self.get(upload_id), True

    # --- outbox --------------------------------------------------------------------------------

    def pending_events(self, limit: int = 100) -> list[OutboxRow]:
        """Unpublished events, oldest first."""
        rows = self._query(
            "SELECT id, upload_id, topic, key, payload, attempts FROM outbox "
            "WHERE published_at IS NULL ORDER BY id LIMIT ?",
            (limit,),
        )
        return [
            OutboxRow(
                r["id"], r["upload_id"], r["topic"], r["key"], bytes(r["payload"]), r["attempts"]
            )
            for r in rows
        ]

    def pending_count(self) -> int:
        """How many events wait to be published."""
        return int(self._query("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")[0][0])

    def mark_published(self, event_id: int) -> None:
        """Record that the broker acknowledged an event."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE outbox SET published_at = ?, attempts = attempts + 1, last_error = NULL "
                "WHERE id = ?",
                (utc_now(), event_id),
            )

    def mark_failed(self, event_id: int, error: str) -> None:
        """Record a failed publish attempt; the event stays pending."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                (error[:MAX_ERROR_CHARS], event_id),
            )

    def events_of(self, upload_id: str) -> list[dict[str, Any]]:
        """Every outbox row of an upload (for inspection and tests)."""
        rows = self._query(
            "SELECT id, topic, key, payload, created_at, published_at, attempts, last_error "
            "FROM outbox WHERE upload_id = ? ORDER BY id",
            (upload_id,),
        )
        return [{**dict(r), "payload": bytes(r["payload"])} for r in rows]

    # --- reconciliation ------------------------------------------------------------------------

    def stale_uploads(self, older_than_s: float, limit: int = 100) -> list[UploadRecord]:
        """Non-terminal uploads untouched (and not reconciled) for `older_than_s`, with no event
        still waiting in the outbox and none published in that time: those whose hand-off may
        have been lost.

        The clock also starts at the last publish: an event that waited out a long broker outage
        in the outbox gets `older_than_s` to be consumed, not a duplicate on the next pass.
        """
        cutoff = _iso(datetime.now(UTC) - timedelta(seconds=older_than_s))
        rows = self._query(
            f"SELECT {_COLUMNS} FROM uploads u "
            "WHERE status IN ('stored', 'queued', 'training') "
            "AND MAX(updated_at, COALESCE(reconciled_at, '')) < ? "
            "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.upload_id = u.upload_id "
            "                AND (o.published_at IS NULL OR o.published_at >= ?)) "
            "ORDER BY updated_at LIMIT ?",
            (cutoff, cutoff, limit),
        )
        return [_record(row) for row in rows]

    def republish(self, upload_id: str, topic: str, event: bytes) -> None:
        """Queue the upload's event again and restart its reconcile clock."""
        now = utc_now()
        with self._transaction() as conn:
            _insert_event(conn, upload_id, topic, event, now)
            conn.execute(
                "UPDATE uploads SET reconciled_at = ? WHERE upload_id = ?", (now, upload_id)
            )

    def uploads_in_status(self, statuses: tuple[str, ...], limit: int = 100) -> list[UploadRecord]:
        """Uploads in one of `statuses` whose events all left the outbox, oldest first."""
        marks = ", ".join("?" * len(statuses))
        rows = self._query(
            f"SELECT {_COLUMNS} FROM uploads u WHERE status IN ({marks}) "
            "AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.upload_id = u.upload_id "
            "                AND o.published_at IS NULL) "
            "ORDER BY updated_at LIMIT ?",
            (*statuses, limit),
        )
        return [_record(row) for row in rows]

    def touch_reconciled(self, upload_id: str) -> None:
        """Restart an upload's reconcile clock without publishing."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE uploads SET reconciled_at = ? WHERE upload_id = ?", (utc_now(), upload_id)
            )


def _insert_event(
    conn: sqlite3.Connection, upload_id: str, topic: str, event: bytes, now: str
) -> None:
    conn.execute(
        "INSERT INTO outbox (upload_id, topic, key, payload, created_at) VALUES (?, ?, ?, ?, ?)",
        (upload_id, topic, upload_id, event, now),
    )


def _record(row: sqlite3.Row) -> UploadRecord:
    """An uploads row as a record, its JSON columns decoded."""
    record = dict(row)
    for name in ("metrics", "preview"):
        record[name] = json.loads(record[name]) if record[name] is not None else None
    return UploadRecord(**record)
