"""The upload service through TestClient: a file:// store, a real SQLite file, and a Kafka port with
nothing listening, so every event stays in the outbox."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from salesflow.auth import auth_headers
from salesflow.config import Settings
from salesflow.services.upload.app import DB_FILE, create_app
from salesflow.storage import FileStore, local_path_of
from tests.conftest import free_port
from tests.unit.test_upload_streaming import FullDiskStore

HEADER = b"product_id,product_name,product_price,store_id,store_name,quantity,date\n"
ROW = b"1,Widget,2.50,7,Main St,3,2024-01-01\n"
CSV = HEADER + ROW * 3


@pytest.fixture
def upload_settings(settings: Settings) -> Settings:
    """A closed Kafka port: nothing listens there, so events wait in the outbox."""
    return settings.model_copy(
        update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}", "max_upload_bytes": 50_000}
    )


@pytest.fixture
def client(upload_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(upload_settings), headers=auth_headers(upload_settings)) as client:
        yield client


def objects_root(settings: Settings) -> Path:
    return local_path_of(settings.storage_url)


def files_under(root: Path) -> list[str]:
    """Every file under root, temp files included (the health probe excluded)."""
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


def post(client: TestClient, content: bytes, name: str = "sales.csv", **params: Any) -> Any:
    return client.post("/uploads", files={"file": (name, content, "text/csv")}, params=params)


def test_good_upload_is_stored_with_row_and_outbox_event(
    client: TestClient, upload_settings: Settings
) -> None:
    response = post(client, CSV)

    assert response.status_code == 202, response.text
    body = response.json()
    upload_id = body["upload_id"]
    assert body["status"] == "stored" and body["duplicate"] is False
    assert body["size"] == len(CSV) and body["sha256"] == hashlib.sha256(CSV).hexdigest()
    assert body["preview"]["lines"] == 4 and body["preview"]["delimiter"] == "comma"
    path = objects_root(upload_settings) / "uploads" / f"{upload_id}.csv"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == body["sha256"]
    assert body["url"] == path.as_uri()
    assert db_rows(upload_settings, "SELECT upload_id, status FROM uploads") == [
        (upload_id, "stored")
    ]
    [(topic, key, payload, published)] = db_rows(
        upload_settings, "SELECT topic, key, payload, published_at FROM outbox"
    )
    assert (topic, key, published) == (upload_settings.kafka_uploads_topic, upload_id, None)
    assert b'"schema_version":1' in payload and upload_id.encode() in payload
    assert client.get(f"/uploads/{upload_id}").json()["sha256"] == body["sha256"]


def test_the_history_mode_is_kept_and_sent_in_the_event(
    client: TestClient, upload_settings: Settings
) -> None:
    response = post(client, CSV, mode="append")
    assert response.status_code == 202, response.text
    assert response.json()["mode"] == "append"
    [(payload,)] = db_rows(upload_settings, "SELECT payload FROM outbox")
    assert b'"mode":"append"' in payload
    assert client.get(f"/uploads/{response.json()['upload_id']}").json()["mode"] == "append"
    assert post(client, CSV, mode="merge", force=True).status_code == 422


def test_bad_header_names_the_columns_and_stores_nothing(
    client: TestClient, upload_settings: Settings
) -> None:
    response = post(client, b"product_id,qty,date\n1,2,2024-01-01\n")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "bad_header"
    assert "product_name, product_price, store_id, store_name, quantity" in error["message"]
    assert files_under(objects_root(upload_settings)) == []
    assert db_rows(upload_settings, "SELECT COUNT(*) FROM uploads") == [(0,)]
    assert db_rows(upload_settings, "SELECT COUNT(*) FROM outbox") == [(0,)]


def test_gzip_is_415(client: TestClient, upload_settings: Settings) -> None:
    import gzip

    response = post(client, gzip.compress(CSV), name="sales.csv.gz")
    assert response.status_code == 415
    assert response.json()["error"] == {
        "code": "unsupported_media_type",
        "message": "compressed files are not accepted (gzip detected); upload the CSV itself",
    }
    assert files_under(objects_root(upload_settings)) == []


def test_too_large_is_413_and_leaves_nothing(client: TestClient, upload_settings: Settings) -> None:
    response = post(client, HEADER + ROW * 2_000)  # ~76 kB over the 50 kB limit
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert "50000 bytes" in response.json()["error"]["message"]
    assert files_under(objects_root(upload_settings)) == []  # no temp file either
    assert db_rows(upload_settings, "SELECT COUNT(*) FROM outbox") == [(0,)]


def test_duplicate_then_force(client: TestClient, upload_settings: Settings) -> None:
    first = post(client, CSV).json()

    again = post(client, CSV, name="other.csv")
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["upload_id"] == first["upload_id"]
    assert files_under(objects_root(upload_settings)) == [f"uploads/{first['upload_id']}.csv"]

    forced = post(client, CSV, force="true")
    assert forced.status_code == 202
    assert forced.json()["upload_id"] != first["upload_id"]
    assert len(files_under(objects_root(upload_settings))) == 2
    assert db_rows(upload_settings, "SELECT COUNT(*) FROM outbox") == [(2,)]


def test_filename_is_metadata_only(client: TestClient, upload_settings: Settings) -> None:
    body = post(client, CSV, name="../../x.csv").json()
    assert body["filename"] == "x.csv"
    assert body["key"] == f"uploads/{body['upload_id']}.csv"
    assert files_under(objects_root(upload_settings)) == [body["key"]]
    assert not (upload_settings.data_dir / "x.csv").exists()
    assert not (upload_settings.data_dir.parent / "x.csv").exists()


def test_status_transitions(client: TestClient) -> None:
    upload_id = post(client, CSV).json()["upload_id"]

    def report(**body: Any) -> Any:
        return client.post(f"/uploads/{upload_id}/status", json=body)

    assert report(status="queued", job_id="job-1").json()["status"] == "queued"
    assert report(status="training", job_id="job-1").json()["status"] == "training"
    stale = report(status="queued", job_id="job-1")
    assert stale.status_code == 200 and stale.json()["status"] == "training"
    trained = report(status="trained", model_version="v1", metrics={"wape": 0.2}).json()
    assert (trained["status"], trained["model_version"], trained["metrics"]) == (
        "trained",
        "v1",
        {"wape": 0.2},
    )
    late = report(status="failed", error_code="model_error", error="boom")
    assert late.status_code == 200
    assert late.json()["status"] == "trained" and late.json()["error"] is None

    assert report(status="finished").status_code == 422
    assert report(status="stored").status_code == 422
    missing = client.post(f"/uploads/{'0' * 32}/status", json={"status": "queued"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_rejected_upload_is_not_a_duplicate(client: TestClient) -> None:
    stored = post(client, CSV).json()
    first = stored["upload_id"]
    rejection = {"status": "rejected", "error_code": "checksum_mismatch", "error": "changed"}
    forged = client.post(
        f"/uploads/{first}/status", json={**rejection, "sha256": "0" * 64, "size": stored["size"]}
    )
    assert forged.status_code == 409 and forged.json()["error"]["code"] == "report_mismatch"
    assert client.get(f"/uploads/{first}").json()["status"] == "stored"
    genuine = client.post(
        f"/uploads/{first}/status",
        json={**rejection, "sha256": stored["sha256"], "size": stored["size"]},
    )
    assert genuine.status_code == 200 and genuine.json()["status"] == "rejected"
    again = post(client, CSV)
    assert again.status_code == 202 and again.json()["upload_id"] != first


def test_list_newest_first_and_filter(client: TestClient) -> None:
    ids = [post(client, HEADER + ROW * n).json()["upload_id"] for n in (1, 2, 3)]
    client.post(f"/uploads/{ids[0]}/status", json={"status": "queued"})

    listed = client.get("/uploads").json()["uploads"]
    assert [u["upload_id"] for u in listed] == ids[::-1]
    queued = client.get("/uploads", params={"status": "queued"}).json()["uploads"]
    assert [u["upload_id"] for u in queued] == [ids[0]]
    assert len(client.get("/uploads", params={"limit": 1}).json()["uploads"]) == 1
    assert client.get("/uploads", params={"status": "nope"}).status_code == 422
    assert client.get(f"/uploads/{'f' * 32}").status_code == 404


def test_token_required_except_health(upload_settings: Settings) -> None:
    with TestClient(create_app(upload_settings)) as anonymous:
        assert post(anonymous, CSV).status_code == 401
        assert anonymous.get("/uploads").status_code == 401
        wrong = anonymous.get("/uploads", headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 401
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        ready = anonymous.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["storage"] == "ok"
    assert ready.json()["checks"]["database"] == "ok"
    assert ready.json()["checks"]["kafka"].startswith("unreachable")


def test_readyz_reports_pending_events_when_kafka_is_down(client: TestClient) -> None:
    post(client, CSV)
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["kafka"] == ("unreachable (events wait in the outbox: 1 pending)")
    assert ready.json()["outbox_pending"] == 1


def test_readyz_503_when_storage_is_unusable(settings: Settings, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    broken = settings.model_copy(
        update={
            "storage_url": (blocker / "objects").as_uri(),
            "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}",
        }
    )
    with TestClient(create_app(broken)) as anonymous:
        ready = anonymous.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "not_ready"
    assert ready.json()["checks"]["storage"] == "failing (storage_error)"


def test_busy_is_503_with_retry_after(client: TestClient) -> None:
    slots = client.app.state.resources.slots  # type: ignore[attr-defined]
    for _ in range(slots.limit):
        slots.acquire()  # every slot taken, as by uploads in flight
    response = post(client, CSV)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "busy"
    for _ in range(slots.limit):
        slots.release()
    assert post(client, CSV).status_code == 202


def test_full_disk_is_507_and_nothing_is_stored(
    client: TestClient, upload_settings: Settings
) -> None:
    resources = client.app.state.resources  # type: ignore[attr-defined]
    resources.store = FullDiskStore(objects_root(upload_settings))
    response = post(client, HEADER + ROW * 1000)
    assert response.status_code == 507
    assert response.json()["error"]["code"] == "storage_full"
    assert files_under(objects_root(upload_settings)) == []
    assert db_rows(upload_settings, "SELECT COUNT(*) FROM uploads") == [(0,)]


def test_not_multipart_is_415(client: TestClient) -> None:
    response = client.post("/uploads", content=CSV, headers={"Content-Type": "text/csv"})
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["error"]["message"]


def test_store_is_a_file_store(client: TestClient, upload_settings: Settings) -> None:
    """The default storage of a data folder is file:// under it (what the other tests rely on)."""
    store = client.app.state.resources.store  # type: ignore[attr-defined]
    assert isinstance(store, FileStore)
    assert store.root == upload_settings.data_dir / "objects"
