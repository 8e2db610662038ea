"""End to end over real processes: upload -> S3 -> Kafka -> consumer -> job server -> Spark -> predict."""

from __future__ import annotations

import json
import secrets
import time
from datetime import date
from typing import Any

import pytest
from confluent_kafka import Consumer

from salesflow.cli.demo import forecast_request
from salesflow.clients.jobs import JobServerClient
from salesflow.clients.upload import UploadClient
from salesflow.sales.catalog import load_catalog
from salesflow.sales.contract import upload_key
from tests.fixtures.system import System, check_invariants

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def read_topic(system: System, topic: str, key: str, timeout: float = 30.0) -> dict[str, Any]:
    """Read `topic` from the start with a fresh group; the JSON value of the first record keyed `key`."""
    consumer = Consumer(
        {
            "bootstrap.servers": system.settings.kafka_bootstrap_servers,
            "group.id": f"e2e-reader-{secrets.token_hex(4)}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            if msg.key() == key.encode():
                return json.loads(msg.value())
        raise AssertionError(f"no record keyed {key} on {topic} within {timeout} s")
    finally:
        consumer.close()


def test_upload_trains_and_predicts(system: System) -> None:
    path = system.sales_file(20_000, seed=0)
    with UploadClient(system.settings) as client:
        record = client.upload(path)
    upload_id = record["upload_id"]
    assert record["status"] == "stored"
    assert record["url"] == f"s3://{system.bucket}/store/{upload_key(upload_id)}"

    event = read_topic(system, system.settings.kafka_uploads_topic, upload_id)
    assert set(event) == {
        "schema_version",
        "upload_id",
        "url",
        "size",
        "sha256",
        "filename",
        "uploaded_at",
    }
    assert event["schema_version"] == 1
    assert event["size"] == path.stat().st_size
    assert event["sha256"] == record["sha256"]
    assert event["filename"] == path.name

    final = system.wait_terminal(upload_id)
    assert final["status"] == "trained", final
    version = final["model_version"]
    with JobServerClient(system.settings) as jobs:
        models = jobs.models()
        assert models["active"] == version
        assert any(m["version"] == version for m in models["models"])

    catalog = load_catalog(None)
    request = forecast_request(catalog, _first_month_after(2022, 3), 12, system.files / "req.csv")
    with JobServerClient(system.settings) as jobs:
        answer = jobs.predict_csv(request, accept_json=True)
    rows = answer["rows"]
    asked = {(s.id, p.id) for s in catalog.stores for p in catalog.products}
    got = {(r["store_id"], r["product_id"], r["period"]) for r in rows}
    assert len(got) == len(asked) * 12
    assert {(s, p) for s, p, _ in got} == asked
    assert all(r["predicted_quantity"] >= 0 for r in rows)
    assert answer["model_version"] == version


def test_tampered_object_is_dead_lettered(system: System) -> None:
    system.stack.child(
        "upload consumer"
    ).stop()  # hold the hand-off so the object can be changed before verification
    try:
        with UploadClient(system.settings) as client:
            record = client.upload(system.sales_file(2_000, seed=7))
        key = f"store/{upload_key(record['upload_id'])}"
        body = system.s3().get_object(Bucket=system.bucket, Key=key)["Body"].read()
        system.s3().put_object(Bucket=system.bucket, Key=key, Body=body.replace(b",", b";", 1))
    finally:
        system.stack.restart("upload consumer")
    final = system.wait_terminal(record["upload_id"], timeout=60)
    assert final["status"] == "rejected"
    assert final["error_code"] in ("checksum_mismatch", "size_mismatch")
    letter = read_topic(system, system.settings.kafka_dlq_topic, record["upload_id"])
    assert letter["reason"] == final["error_code"]
    assert json.loads(letter["event"])["upload_id"] == record["upload_id"]
    assert system.jobs(record["upload_id"]) == []


def test_same_file_twice_trains_once(system: System) -> None:
    path = system.sales_file(3_000, seed=11)
    with UploadClient(system.settings) as client:
        first = client.upload(path)
        second = client.upload(path)
    assert second["duplicate"] is True
    assert second["upload_id"] == first["upload_id"]
    final = system.wait_terminal(first["upload_id"])
    assert final["status"] == "trained"
    assert len(system.jobs(first["upload_id"])) == 1


def test_upload_while_broker_down_trains_when_it_returns(system: System) -> None:
    system.stack.child("broker").stop()
    try:
        started = time.monotonic()
        with UploadClient(system.settings) as client:
            record = client.upload(system.sales_file(3_000, seed=23))
        assert time.monotonic() - started < 5.0
        assert record["status"] == "stored"
    finally:
        system.stack.restart("broker")
    final = system.wait_terminal(record["upload_id"])
    assert final["status"] == "trained", final
    assert len(system.jobs(record["upload_id"])) == 1


def _first_month_after(year: int, month: int) -> date:
    return date(year + month // 12, month % 12 + 1, 1)


def test_invariants_hold_after_the_flow(system: System) -> None:
    """Runs last in this module: every upload above ended once, nothing doubled, nothing partial."""
    check_invariants(system, [u["upload_id"] for u in system.uploads()])
