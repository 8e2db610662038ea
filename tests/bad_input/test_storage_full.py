"""A disk that fills up exactly at the upload's database commit: 507 storage_full, a message a
person can act on, and nothing kept (the stored object is deleted again, no row, no event)."""

from __future__ import annotations

import sqlite3

import pytest
from fastapi.testclient import TestClient

from salesflow.config import Settings
from tests.bad_input.helpers import HEADER, db_rows, post, row, stored_files

#: Placeholder uploads that fill the database's last pages (small, so that a full page has no room for a real one).
_FILLER = (
    "INSERT INTO uploads (upload_id, key, url, size, sha256, filename, status, preview, "
    "created_at, updated_at) VALUES (?, 'k', 'u', 1, ?, 'f', 'rejected', zeroblob(200), 't', 't')"
)


def test_a_full_disk_at_the_database_commit_is_507_with_what_to_do(
    client: TestClient, upload_settings: Settings
) -> None:
    db = client.app.state.resources.db  # type: ignore[attr-defined]
    with db._lock:  # SQLite's own "database or disk is full": the file may not grow, and is full
        pages = db._conn.execute("PRAGMA page_count").fetchone()[0]
        db._conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        with pytest.raises(sqlite3.OperationalError, match="full"):
            for n in range(1000):
                db._conn.execute(_FILLER, (f"filler{n}", f"{n:064x}"))
    fillers = db_rows(upload_settings, "SELECT COUNT(*) FROM uploads")

    response = post(client, HEADER + row() * 20)
    assert response.status_code == 507, response.text
    error = response.json()["error"]
    assert error["code"] == "storage_full", error
    assert "uploads.db" in error["message"] and "free space" in error["message"], error
    assert str(upload_settings.data_dir) not in error["message"]
    assert stored_files(upload_settings) == []  # the object stored before the commit is gone
    assert db_rows(upload_settings, "SELECT COUNT(*) FROM uploads") == fillers
    assert db_rows(upload_settings, "SELECT COUNT(*) FROM outbox") == [(0,)]
