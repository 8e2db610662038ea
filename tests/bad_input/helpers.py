"""Helpers of the bad-input suite: sample lines, and what a request left behind (objects, upload
rows, outbox events)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from salesflow.config import Settings
from salesflow.services.upload.app import DB_FILE
from salesflow.storage import local_path_of

HEADER = b"product_id,product_name,product_price,store_id,store_name,quantity,date\n"


def row(
    product: str = "1",
    store: str = "7",
    quantity: str = "3",
    date: str = "2024-01-01",
    name: str = "Widget",
    sep: str = ",",
) -> bytes:
    """One data line (LF-terminated) in the upload format."""
    return sep.join([product, name, "2.50", store, "Main St", quantity, date]).encode() + b"\n"


def post(client: TestClient, content: bytes, name: str = "sales.csv") -> Any:
    return client.post("/uploads", files={"file": (name, content, "text/csv")})


def stored_files(settings: Settings) -> list[str]:
    """Every file under the object store, temp files included (the health probe excluded)."""
    root = local_path_of(settings.storage_url)
    if not root.exists():
        return []
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.relative_to(root).as_posix().startswith("_health/")
    )


def db_rows(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(settings.data_dir / DB_FILE) as conn:
        return conn.execute(sql).fetchall()


def assert_refused(
    response: Any, settings: Settings, status: int, code: str, *message_parts: str
) -> str:
    """The error's status, code and message; and nothing kept: no object, row or event."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    for part in message_parts:
        assert part in error["message"], error["message"]
    assert stored_files(settings) == []
    assert db_rows(settings, "SELECT COUNT(*) FROM uploads") == [(0,)]
    assert db_rows(settings, "SELECT COUNT(*) FROM outbox") == [(0,)]
    return str(error["message"])


def assert_kept(
    response: Any, client: TestClient, settings: Settings, content: bytes
) -> dict[str, Any]:
    """A 202 whose exact bytes are stored under uploads/<id>.csv with a row, its preview and one
    outbox event; the preview (also as GET /uploads/{id} returns it)."""
    assert response.status_code == 202, response.text
    body = response.json()
    key = f"uploads/{body['upload_id']}.csv"
    assert body["key"] == key
    assert stored_files(settings) == [key]
    assert (local_path_of(settings.storage_url) / key).read_bytes() == content
    assert db_rows(settings, "SELECT upload_id, status FROM uploads") == [
        (body["upload_id"], "stored")
    ]
    assert db_rows(settings, "SELECT upload_id FROM outbox") == [(body["upload_id"],)]
    fetched = client.get(f"/uploads/{body['upload_id']}").json()
    assert fetched["preview"] == body["preview"]
    preview: dict[str, Any] = body["preview"]
    return preview


def objects_root(settings: Settings) -> Path:
    return local_path_of(settings.storage_url)
