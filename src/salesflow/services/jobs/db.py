"""The job table: one SQLite file (WAL) that survives restarts and makes train requests idempotent.

`jobs.job_key` is UNIQUE: the upload id for an upload's first train job, `<upload_id>:replay:<n>`
for the n-th replay (a new job retraining a past upload on purpose), the job id for a predict job.
So asking twice (or twenty times at once) to train the same upload gives one job, and a replay
is always a new one. Workers claim queued jobs with one atomic `UPDATE ... WHERE status = 'queued'`.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from salesflow.errors import NotFoundError
from salesflow.sqlite import SqliteFile

__all__ = ["JOB_STATUSES", "MAX_ATTEMPTS", "Job", "JobDB", "utc_now"]

JobKind = Literal["train", "predict"]
JOB_STATUSES = ("queued", "running", "succeeded", "failed")
#: A train job interrupted by a restart runs again once; a second interruption fails it.
MAX_ATTEMPTS = 2
#: Largest page of GET /jobs.
MAX_LIST = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id        TEXT PRIMARY KEY,
    kind          TEXT NOT NULL CHECK (kind IN ('train', 'predict')),
    job_key       TEXT NOT NULL UNIQUE,
    upload_id     TEXT,
    status        TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT,
    input_url     TEXT NOT NULL,
    sha256        TEXT,
    model_version TEXT,
    result        TEXT,
    output_path   TEXT,
    error_code    TEXT,
    error         TEXT,
    log_tail      TEXT NOT NULL DEFAULT '[]',
    attempts      INTEGER NOT NULL DEFAULT 0,
    mode          TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status);
CREATE INDEX IF NOT EXISTS jobs_by_upload ON jobs (upload_id);
"""
#: The columns a table from before replays (no job_key, upload_id UNIQUE) has; copied over.
_OLD_COLUMNS = (
    "job_id, kind, upload_id, status, created_at, started_at, finished_at, input_url, sha256,"
    " model_version, result, output_path, error_code, error, log_tail, attempts"
)


#: What a failed job keeps of its run (rows read and rejected, ...), or None.
Result = dict[str, Any] | None


def utc_now() -> str:
    """Now as a UTC ISO-8601 string (milliseconds, so listing order is stable)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Job:
    """One row of the job table."""

    job_id: str
    kind: JobKind
    upload_id: str | None
    status: str
    created_at: str
    input_url: str
    job_key: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    sha256: str | None = None
    model_version: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    output_path: str | None = None
    error_code: str | None = None
    error: str | None = None
    log_tail: list[str] = field(default_factory=list)
    attempts: int = 0
    mode: str | None = None  # train: the history mode (None: the setting); predict: rows, per_month

    @property
    def terminal(self) -> bool:
        return self.status in ("succeeded", "failed")

    @property
    def replay(self) -> bool:
        """A train job asked for again on purpose (not the upload's first)."""
        return self.kind == "train" and ":replay:" in self.job_key

    def to_dict(self) -> dict[str, Any]:
        """The job as the API shows it: result fields flattened, no local output path."""
        result = self.result
        body: dict[str, Any] = {
            "job_id": self.job_id,
            "kind": self.kind,
            "job_key": self.job_key,
            "replay": self.replay,
            "upload_id": self.upload_id,
            "status": self.status,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "input_url": self.input_url,
            "sha256": self.sha256,
            "mode": self.mode,
            "model_version": self.model_version,
            "metrics": result.get("metrics"),
            "rows_read": result.get("rows_read"),
            "rows_rejected": result.get("rows_rejected"),
            "rejects_by_reason": result.get("rejects_by_reason"),
            "rejects_url": result.get("rejects_url"),
            "rows_aggregated": result.get("rows_aggregated"),
            "date_range": result.get("date_range"),
            "timings": result.get("timings"),
            "promoted": result.get("promoted"),
            "promotion": result.get("promotion"),
            # what each file did to the curated history: its mode, the uploads it overlapped
            "history": [
                {k: i.get(k) for k in ("upload_id", "sha256", "mode", "appended", "overlaps")}
                for i in result.get("inputs") or []
            ],
            **self._granularity_fields(),
            "error_code": self.error_code,
            "error": self.error,
            "attempts": self.attempts,
            "log_tail": self.log_tail,
        }
        if self.kind == "predict":
            body["rows"] = result.get("rows")
            body["unknown_stores"] = result.get("unknown_stores")
            body["unknown_products"] = result.get("unknown_products")
            body["lineage"] = result.get("lineage")
            body["notes"] = result.get("notes")
            body["output"] = f"/jobs/{self.job_id}/output" if self.status == "succeeded" else None
        return body

    def _granularity_fields(self) -> dict[str, Any]:
        """A train result's granularity, filled days, coherence summary and `both`'s day run.

        Rows written before day models record none of these: a finished train job of theirs
        trained a month model (granularity "month"), with no day run (`also` empty).
        """
        result = self.result
        granularity = result.get("granularity")
        if granularity is None and self.kind == "train" and self.model_version:
            granularity = "month"
        also = result.get("also")
        return {
            "granularity": granularity,
            "filled_cells": result.get("filled_cells"),
            "coherence": result.get("coherence"),
            "also": also if isinstance(also, list) else [],
        }


def _row_to_job(row: sqlite3.Row) -> Job:
    return Job(
        job_id=row["job_id"],
        kind=row["kind"],
        job_key=row["job_key"],
        upload_id=row["upload_id"],
        status=row["status"],
        created_at=row["created_at"],
        input_url=row["input_url"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        sha256=row["sha256"],
        model_version=row["model_version"],
        result=json.loads(row["result"]) if row["result"] else {},
        output_path=row["output_path"],
        error_code=row["error_code"],
        error=row["error"],
        log_tail=json.loads(row["log_tail"] or "[]"),
        attempts=row["attempts"],
        mode=row["mode"],
    )


def _fetch(conn: sqlite3.Connection, job_id: str) -> Job:
    row = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no job {job_id[:64]!r}")
    return _row_to_job(row)


class JobDB(SqliteFile):
    """The job table behind a lock: one connection shared by the request and worker threads."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, busy_timeout_s=30)
        with self._lock:
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
            self._conn.executescript(_SCHEMA)
            columns = {r["name"] for r in self._conn.execute("PRAGMA table_info(jobs)")}
            if "mode" not in columns:  # a table from before history modes
                self._conn.execute("ALTER TABLE jobs ADD COLUMN mode TEXT")

    def _migrate(self) -> None:
        """Rebuild a table from before replays (SQLite cannot drop a UNIQUE constraint in place)."""
        columns = {r["name"] for r in self._conn.execute("PRAGMA table_info(jobs)")}
        if not columns or "job_key" in columns:
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.execute("ALTER TABLE jobs RENAME TO jobs_before_replays")
            self._conn.execute("DROP INDEX IF EXISTS jobs_by_status")
            for statement in _SCHEMA.split(";"):  # executescript would commit half-way
                if statement.strip():
                    self._conn.execute(statement)
            self._conn.execute(
                f"INSERT INTO jobs ({_OLD_COLUMNS}, job_key) SELECT {_OLD_COLUMNS},"
                " COALESCE(upload_id, job_id) FROM jobs_before_replays ORDER BY rowid"
            )
            self._conn.execute("DROP TABLE jobs_before_replays")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def ping(self) -> None:
        """Raise if the database does not answer."""
        with self._lock:
            self._conn.execute("SELECT 1").fetchone()

    # --- creating ------------------------------------------------------------------------------

    def create_train(
        self,
        upload_id: str,
        input_url: str,
        sha256: str | None,
        *,
        replay: bool = False,
        mode: str | None = None,
    ) -> tuple[Job, bool]:
        """The train job of an upload, created if new: (job, created).

        `replay`: always a new job (`<upload_id>:replay:<n>`), even when the upload has one.
        `mode`: the history mode (replace, append, reject; None: the setting).
        """
        job_id = secrets.token_hex(16)
        with self._transaction() as conn:
            key = upload_id
            if replay:  # numbered inside the write transaction, so concurrent replays differ
                (count,) = conn.execute(
                    "SELECT COUNT(*) FROM jobs WHERE kind = 'train' AND upload_id = ?"
                    " AND job_key LIKE '%:replay:%'",
                    (upload_id,),
                ).fetchone()
                key = f"{upload_id}:replay:{count + 1}"
            cursor = conn.execute(
                "INSERT INTO jobs (job_id, kind, job_key, upload_id, status, created_at,"
                " input_url, sha256, mode) VALUES (?, 'train', ?, ?, 'queued', ?, ?, ?, ?)"
                " ON CONFLICT (job_key) DO NOTHING",
                (job_id, key, upload_id, utc_now(), input_url, sha256, mode),
            )
            created = cursor.rowcount == 1
            row = conn.execute("SELECT * FROM jobs WHERE job_key = ?", (key,)).fetchone()
        return _row_to_job(row), created

    def first_train(self, upload_id: str) -> Job | None:
        """The upload's first train job (not a replay), or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT * FROM jobs WHERE job_key = ? AND kind = 'train'", (upload_id,)
            ).fetchone()
        return _row_to_job(row) if row is not None else None

    def create_predict(
        self,
        input_url: str,
        model_version: str | None,
        output_path: Path,
        job_id: str,
        per_month: bool = False,
    ) -> Job:
        """A queued predict job reading `input_url` and writing its CSV to `output_path` (one row
        per input row, or per store/product/month: `mode` "per_month")."""
        mode = "per_month" if per_month else "rows"
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO jobs (job_id, kind, job_key, status, created_at, input_url,"
                " model_version, output_path, mode) VALUES (?, 'predict', ?, 'queued', ?, ?, ?, ?, ?)",
                (job_id, job_id, utc_now(), input_url, model_version, str(output_path), mode),
            )
            row = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return _row_to_job(row)

    # --- reading -------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """The job, or NotFoundError."""
        with self._lock:
            return _fetch(self._conn, job_id)

    def find(
        self, *, upload_id: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[Job]:
        """Jobs, newest first, optionally of one upload and/or in one status."""
        where, params = [], []
        if upload_id is not None:
            where.append("upload_id = ?")
            params.append(upload_id)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        sql = "SELECT * FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY rowid DESC LIMIT ?"
        with self._lock:
            rows = self._conn.execute(sql, (*params, max(1, min(limit, MAX_LIST)))).fetchall()
        return [_row_to_job(row) for row in rows]

    # --- running -------------------------------------------------------------------------------

    def claim_next(self) -> Job | None:
        """Atomically move the oldest queued job to running and return it (None if none)."""
        with self._transaction() as conn:
            row = conn.execute(
                "UPDATE jobs SET status = 'running', started_at = ?, finished_at = NULL,"
                " attempts = attempts + 1 WHERE job_id = (SELECT job_id FROM jobs"
                " WHERE status = 'queued' ORDER BY rowid LIMIT 1) AND status = 'queued'"
                " RETURNING *",
                (utc_now(),),
            ).fetchone()
        return _row_to_job(row) if row is not None else None

    def set_log_tail(self, job_id: str, lines: list[str]) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE jobs SET log_tail = ? WHERE job_id = ?", (json.dumps(lines), job_id)
            )

    def succeed(
        self,
        job_id: str,
        *,
        model_version: str | None,
        result: dict[str, Any],
        log_tail: list[str],
    ) -> Job:
        """Record a finished job."""
        return self._finish(
            job_id,
            "UPDATE jobs SET status = 'succeeded', finished_at = ?, model_version = ?, result = ?,"
            " error_code = NULL, error = NULL, log_tail = ? WHERE job_id = ? RETURNING *",
            (utc_now(), model_version, json.dumps(result, default=str), json.dumps(log_tail)),
        )

    def fail(
        self, job_id: str, *, code: str, message: str, log_tail: list[str], result: Result = None
    ) -> Job:
        """Record a failed job with a stable code and a short message (and what it counted)."""
        counts = json.dumps(result, default=str) if result else None
        return self._finish(
            job_id,
            "UPDATE jobs SET status = 'failed', finished_at = ?, error_code = ?, error = ?,"
            " log_tail = ?, result = COALESCE(?, result) WHERE job_id = ? RETURNING *",
            (utc_now(), code, message, json.dumps(log_tail), counts),
        )

    def _finish(self, job_id: str, sql: str, params: tuple[Any, ...]) -> Job:
        with self._transaction() as conn:
            row = conn.execute(sql, (*params, job_id)).fetchone()
        if row is None:
            raise NotFoundError(f"no job {job_id[:64]!r}")
        return _row_to_job(row)

    def release(self, job_id: str) -> Job:
        """Give back a running job whose worker stopped: re-queue it or fail it as interrupted."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT * FROM jobs WHERE job_id = ? AND status = 'running'", (job_id,)
            ).fetchone()
            if row is None:
                return _fetch(conn, job_id)
            return _row_to_job(self._release_row(conn, row))

    @staticmethod
    def _release_row(conn: sqlite3.Connection, row: sqlite3.Row) -> sqlite3.Row:
        if row["kind"] == "train" and row["attempts"] < MAX_ATTEMPTS:
            sql = (
                "UPDATE jobs SET status = 'queued', started_at = NULL WHERE job_id = ? RETURNING *"
            )
            params: tuple[Any, ...] = (row["job_id"],)
        else:
            sql = (
                "UPDATE jobs SET status = 'failed', finished_at = ?, error_code = 'interrupted',"
                " error = ? WHERE job_id = ? RETURNING *"
            )
            message = (
                f"the job server stopped while this job was running ({row['attempts']} attempt(s))"
            )
            params = (utc_now(), message, row["job_id"])
        updated: sqlite3.Row = conn.execute(sql, params).fetchone()
        return updated

    def recover(self) -> list[Job]:
        """At start-up: re-queue or fail every job a previous process left running."""
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT * FROM jobs WHERE status = 'running' ORDER BY rowid"
            ).fetchall()
            return [_row_to_job(self._release_row(conn, row)) for row in rows]
