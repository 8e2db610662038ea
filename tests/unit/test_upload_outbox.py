"""The outbox relay's logic on a real SQLite outbox, with an in-memory publisher and job lookup.

The real broker path is covered by tests/integration/test_upload_service.py; here the publisher is
a plain object implementing the relay's `Publisher` protocol, so failures can be scripted.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from salesflow.clients.jobs import JobServerClient
from salesflow.config import Settings
from salesflow.errors import UnavailableError
from salesflow.sales.contract import UploadEvent
from salesflow.services.upload.db import UploadDB
from salesflow.services.upload.outbox import (
    OutboxRelay,
    bootstrap_accepts,
    event_of,
    job_server_lookup,
)
from salesflow.services.upload.record import NewUpload, UploadRecord
from tests.conftest import free_port


class Recorder:
    """Publishes into a list; fails the next `fail` calls."""

    def __init__(self, fail: int = 0) -> None:
        self.sent: list[tuple[str, str, bytes]] = []
        self.fail = fail

    def publish(self, topic: str, key: str, value: bytes) -> None:
        if self.fail:
            self.fail -= 1
            raise UnavailableError("Kafka did not accept the event: broker down")
        self.sent.append((topic, key, value))


@pytest.fixture
def listening(settings: Settings) -> Iterator[Settings]:
    """Settings whose bootstrap address accepts TCP connections (the relay's pre-flight)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        yield settings.model_copy(
            update={"kafka_bootstrap_servers": f"127.0.0.1:{port}", "reconcile_after_s": 0.01}
        )


@pytest.fixture
def db(tmp_path: Path) -> UploadDB:
    return UploadDB(tmp_path / "uploads.db")


def add(db: UploadDB, settings: Settings, n: int) -> UploadRecord:
    upload_id = f"{n:032x}"
    upload = NewUpload(
        upload_id=upload_id,
        key=f"uploads/{upload_id}.csv",
        url=f"s3://bucket/uploads/{upload_id}.csv",
        size=n,
        sha256=f"{n:064x}",
        filename="f.csv",
        created_at="2024-01-01T00:00:00.000Z",
    )
    return db.add_upload(upload, event_of(upload), settings.kafka_uploads_topic)[0]


def test_publishes_in_order_and_marks_published(listening: Settings, db: UploadDB) -> None:
    records = [add(db, listening, n) for n in (1, 2, 3)]
    publisher = Recorder()
    relay = OutboxRelay(listening, db, publisher, prepare=lambda: None)

    assert relay.publish_pending() is False  # everything went out; no more waiting
    assert [key for _, key, _ in publisher.sent] == [r.upload_id for r in records]
    assert json.loads(publisher.sent[0][2])["schema_version"] == 1
    assert db.pending_count() == 0


def test_failure_is_recorded_then_topics_ensured_before_retry(
    listening: Settings, db: UploadDB
) -> None:
    first, second = add(db, listening, 1), add(db, listening, 2)
    prepared: list[bool] = []
    publisher = Recorder(fail=1)
    relay = OutboxRelay(listening, db, publisher, prepare=lambda: prepared.append(True))

    relay.publish_pending()
    assert relay.failures == 1 and publisher.sent == []
    [event] = db.events_of(first.upload_id)
    assert event["attempts"] == 1 and "broker down" in event["last_error"]
    assert db.events_of(second.upload_id)[0]["attempts"] == 0  # stopped at the first failure

    relay.publish_pending()
    assert prepared == [True]  # topics re-created once, after the failure
    assert [key for _, key, _ in publisher.sent] == [first.upload_id, second.upload_id]
    assert relay.failures == 0 and db.pending_count() == 0


def test_closed_port_fails_fast_without_publishing(settings: Settings, db: UploadDB) -> None:
    closed = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    record = add(db, closed, 1)
    publisher = Recorder()
    relay = OutboxRelay(closed, db, publisher, prepare=lambda: None)

    started = time.monotonic()
    relay.publish_pending()
    assert time.monotonic() - started < 1.0
    assert publisher.sent == [] and relay.failures == 1
    [event] = db.events_of(record.upload_id)
    assert event["attempts"] == 1
    assert "no Kafka broker accepts connections" in event["last_error"]


def test_bootstrap_accepts(listening: Settings, settings: Settings) -> None:
    assert bootstrap_accepts(listening)
    dead = f"127.0.0.1:{free_port()}"
    assert not bootstrap_accepts(settings.model_copy(update={"kafka_bootstrap_servers": dead}))
    both = f"{dead},{listening.kafka_bootstrap_servers}"
    assert bootstrap_accepts(settings.model_copy(update={"kafka_bootstrap_servers": both}))


def published(db: UploadDB) -> None:
    for row in db.pending_events():
        db.mark_published(row.id)


def test_reconcile_republishes_a_stale_stored_upload(listening: Settings, db: UploadDB) -> None:
    record = add(db, listening, 1)
    published(db)
    time.sleep(0.05)
    relay = OutboxRelay(listening, db, Recorder(), jobs=lambda _: None)

    assert relay.reconcile() == 1
    events = db.events_of(record.upload_id)
    assert len(events) == 2 and events[1]["published_at"] is None
    assert UploadEvent.from_json(events[1]["payload"]).sha256 == record.sha256
    assert relay.reconcile() == 0  # its new event waits: not re-sent twice


@pytest.mark.parametrize(
    ("job", "status", "fields"),
    [
        (
            {"job_id": "j1", "status": "succeeded", "model_version": "v7", "metrics": {"wape": 1}},
            "trained",
            {"model_version": "v7", "metrics": {"wape": 1}},
        ),
        (
            {"job_id": "j1", "status": "failed", "error_code": "model_error", "error": "boom"},
            "failed",
            {"error_code": "model_error", "error": "boom"},
        ),
        ({"job_id": "j1", "status": "running"}, "training", {"job_id": "j1"}),
    ],
)
def test_reconcile_adopts_the_job_servers_outcome(
    listening: Settings, db: UploadDB, job: dict[str, Any], status: str, fields: dict[str, Any]
) -> None:
    record = add(db, listening, 1)
    published(db)
    db.update_status(record.upload_id, "queued", job_id="j1")
    time.sleep(0.05)
    asked: list[str] = []
    relay = OutboxRelay(listening, db, Recorder(), jobs=lambda uid: asked.append(uid) or job)

    assert relay.reconcile() == 0
    assert asked == [record.upload_id]
    now = db.get(record.upload_id).to_dict()
    assert now["status"] == status
    assert {k: now[k] for k in fields} == fields
    assert len(db.events_of(record.upload_id)) == 1  # nothing re-published


def test_reconcile_republishes_when_job_server_is_down(listening: Settings, db: UploadDB) -> None:
    record = add(db, listening, 1)
    published(db)
    db.update_status(record.upload_id, "training", job_id="j1")
    time.sleep(0.05)

    def down(_: str) -> dict[str, Any] | None:
        raise UnavailableError("job server down")

    relay = OutboxRelay(listening, db, Recorder(), jobs=down)
    assert relay.reconcile() == 1
    assert db.get(record.upload_id).status == "training"


def test_thread_publishes_on_kick_and_stops(listening: Settings, db: UploadDB) -> None:
    publisher = Recorder()
    slow = listening.model_copy(update={"outbox_interval_s": 60.0, "reconcile_after_s": 3600.0})
    relay = OutboxRelay(slow, db, publisher, prepare=lambda: None)
    relay.start()
    try:
        time.sleep(0.1)  # the first pass ran on an empty outbox; the next is 60 s away
        record = add(db, slow, 1)
        relay.kick()
        deadline = time.monotonic() + 5
        while not publisher.sent and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [key for _, key, _ in publisher.sent] == [record.upload_id]
    finally:
        started = time.monotonic()
        relay.stop()
    assert time.monotonic() - started < 2


def test_job_server_lookup_uses_the_job_client(settings: Settings) -> None:
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        if request.url.params["upload_id"] == "c" * 32:
            return httpx.Response(200, json={"jobs": []})
        job = {"job_id": "j9", "kind": "train", "status": "succeeded", "model_version": "v2"}
        return httpx.Response(200, json={"jobs": [job]})

    client = JobServerClient(settings, transport=httpx.MockTransport(handler))
    lookup, close = job_server_lookup(settings, client)
    try:
        found = lookup("d" * 32)
        assert found is not None and found["model_version"] == "v2"
        assert lookup("c" * 32) is None
    finally:
        close()
    assert asked[0].startswith(f"{settings.job_server_url}/jobs?")
    assert "upload_id=" + "d" * 32 in asked[0]
