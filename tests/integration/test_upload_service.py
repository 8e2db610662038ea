"""The upload service as a real uvicorn server: moto S3, the real Kafka-API broker, raw sockets."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer
from fastapi import FastAPI

from salesflow.auth import auth_headers
from salesflow.clients.upload import UploadClient
from salesflow.config import Settings
from salesflow.kafka import LocalBroker, consumer_config
from salesflow.sales.contract import UploadEvent
from salesflow.services.upload.app import create_app
from salesflow.storage import local_path_of
from tests.conftest import free_port
from tests.fixtures.s3 import S3_PREFIX, bucket_of, s3_client_for
from tests.fixtures.servers import serving

HEADER = b"product_id,product_name,product_price,store_id,store_name,quantity,date\n"
ROW = b"1,Widget,2.50,7,Main St,3,2024-01-01\n"
EVENT_FIELDS = {"upload_id", "url", "size", "sha256", "filename", "uploaded_at", "schema_version"}


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[tuple[Settings, FastAPI]]:
    """The upload service on a free port in a thread; yields (client settings, app)."""
    port = free_port()
    settings = settings.model_copy(
        update={"upload_port": port, "upload_service_url": f"http://127.0.0.1:{port}"}
    )
    app = create_app(settings)
    with serving(app, port):
        yield settings, app


def wait_for(condition: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.05)
    raise AssertionError(message)


def read_one_event(settings: Settings, timeout: float = 30) -> Any:
    """An independent consumer (own group) reads the first event of the uploads topic."""
    group = f"verify-{time.monotonic_ns()}"
    consumer = Consumer(consumer_config(settings, group_id=group))
    consumer.subscribe([settings.kafka_uploads_topic])
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                return message
        raise AssertionError("no event on the uploads topic")
    finally:
        consumer.close()


def outbox_drained(settings: Settings) -> bool:
    import httpx

    ready = httpx.get(f"{settings.upload_service_url}/readyz", timeout=10).json()
    return bool(ready["outbox_pending"] == 0 and ready["checks"]["kafka"] == "ok")


@pytest.mark.slow
def test_upload_to_s3_publishes_the_documented_event(
    kafka_settings: Settings, s3_settings: Settings, tmp_path: Path
) -> None:
    settings = kafka_settings.model_copy(
        update={
            "storage_url": s3_settings.storage_url,
            "s3_endpoint_url": s3_settings.s3_endpoint_url,
            "s3_region": s3_settings.s3_region,
        }
    )
    content = HEADER + ROW * 1000
    path = tmp_path / "sales.csv"
    path.write_bytes(content)

    with running(settings) as (live, _), UploadClient(live) as client:
        record = client.upload(path)
        message = read_one_event(live)
        duplicate = client.upload(path)
        wait_for(lambda: outbox_drained(live), 15, "the outbox did not drain")

    upload_id = record["upload_id"]
    assert record["status"] == "stored" and duplicate["duplicate"] is True
    assert duplicate["upload_id"] == upload_id
    assert message.key() == upload_id.encode()
    event = json.loads(message.value())
    assert set(event) == EVENT_FIELDS
    assert event["schema_version"] == 1
    assert event["url"] == f"s3://{bucket_of(settings)}/{S3_PREFIX}/uploads/{upload_id}.csv"
    assert event["size"] == len(content)
    assert event["sha256"] == hashlib.sha256(content).hexdigest()
    assert event["filename"] == "sales.csv"
    assert UploadEvent.from_json(message.value()).upload_id == upload_id
    stored = s3_client_for(settings).get_object(
        Bucket=bucket_of(settings), Key=f"{S3_PREFIX}/uploads/{upload_id}.csv"
    )
    assert hashlib.sha256(stored["Body"].read()).hexdigest() == event["sha256"]


@pytest.mark.slow
def test_upload_with_broker_down_is_published_once_it_starts(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    down = settings.model_copy(
        update={
            "kafka_bootstrap_servers": f"127.0.0.1:{port}",
            "kafka_uploads_topic": f"sales.uploads.down-{port}",
            "kafka_dlq_topic": f"sales.uploads.down-{port}.dlq",
            "outbox_interval_s": 0.2,
        }
    )
    path = tmp_path / "sales.csv"
    path.write_bytes(HEADER + ROW * 10)
    broker = LocalBroker(port=port, log_path=tmp_path / "late-broker.log")

    with running(down) as (live, _), UploadClient(live) as client:
        started = time.monotonic()
        record = client.upload(path)
        elapsed = time.monotonic() - started
        assert elapsed < 2.0, f"the upload took {elapsed:.1f} s with Kafka down"
        assert record["status"] == "stored"
        try:
            broker.start()
            wait_for(lambda: outbox_drained(live), 30, "the waiting event was not published")
            message = read_one_event(live)
        finally:
            broker.stop()

    assert message.key() == record["upload_id"].encode()
    assert UploadEvent.from_json(message.value()).sha256 == record["sha256"]


def raw_request(settings: Settings, body_length: int) -> socket.socket:
    """Open a connection and send the headers of a multipart upload of `body_length` bytes."""
    sock = socket.create_connection(("127.0.0.1", settings.upload_port), timeout=10)
    token = auth_headers(settings)["Authorization"]
    sock.sendall(
        (
            "POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {token}\r\n"
            "Content-Type: multipart/form-data; boundary=xyz\r\n"
            f"Content-Length: {body_length}\r\n\r\n"
            '--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
        ).encode()
        + HEADER
    )
    return sock


def leftover_files(settings: Settings) -> list[Path]:
    root = local_path_of(settings.storage_url)
    return [p for p in root.rglob("*") if p.is_file() and "_health" not in p.parts]


def test_client_disconnect_mid_body_stores_nothing(settings: Settings) -> None:
    closed_kafka = settings.model_copy(
        update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"}
    )
    with running(closed_kafka) as (live, app):
        slots = app.state.resources.slots
        sock = raw_request(live, 10 * 1024 * 1024)
        sock.sendall(ROW * 60_000)  # ~2.2 MiB: the object writer is open
        wait_for(lambda: slots.in_use == 1, 10, "the upload did not start")
        sock.close()
        wait_for(lambda: slots.in_use == 0, 10, "the upload was not cancelled")
        assert leftover_files(live) == []
        assert app.state.resources.db.recent() == []


def test_idle_client_gets_408_and_nothing_is_stored(settings: Settings) -> None:
    idle = settings.model_copy(
        update={
            "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}",
            "upload_idle_timeout_s": 0.5,
        }
    )
    with running(idle) as (live, app):
        sock = raw_request(live, 10 * 1024 * 1024)
        sock.sendall(ROW * 30_000)  # ~1.1 MiB, then silence
        with sock:
            answer = b""
            while b"}" not in answer and (chunk := sock.recv(4096)):
                answer += chunk  # headers and the JSON body may arrive separately
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"body_timeout" in answer
        wait_for(lambda: app.state.resources.slots.in_use == 0, 10, "slot not released")
        assert leftover_files(live) == []


@pytest.mark.slow
def test_large_upload_streams_in_constant_memory(settings: Settings, tmp_path: Path) -> None:
    """64 MiB through client and server while tracemalloc watches every Python allocation."""
    path = tmp_path / "big.csv"
    with path.open("wb") as out:
        out.write(HEADER)
        for _ in range(64):
            out.write(ROW * (1024 * 1024 // len(ROW)))
    closed_kafka = settings.model_copy(
        update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"}
    )
    with running(closed_kafka) as (live, _), UploadClient(live) as client:
        tracemalloc.start()
        try:
            record = client.upload(path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert record["size"] == path.stat().st_size
    # A few 1 MiB batches and chunks in flight on both sides; a buffered body would be > 64 MiB.
    assert peak < 16 * 1024 * 1024, f"peak Python memory {peak / 2**20:.1f} MiB"
