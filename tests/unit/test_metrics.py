"""Each service's /metrics: Prometheus' text format, the service token required, numbers read
from the service's own state (uploads, rejects, jobs, durations, request latency, lag)."""

from __future__ import annotations

import time

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from salesflow.auth import auth_headers
from salesflow.config import Settings
from salesflow.errors import TooManyRejectsError
from salesflow.services.dashboard.app import create_app as create_dashboard
from salesflow.services.jobs.app import create_app as create_jobs
from salesflow.services.upload.app import create_app as create_upload
from tests.conftest import free_port
from tests.unit.test_jobs_api import UPLOAD, FakeSpark, Reports

HEADER = "product_id,product_name,product_price,store_id,store_name,quantity,date\n"
CSV = HEADER + "p1,Radiator,2000,s1,Giant,3,2021-01-05\np1,Radiator,2000,s1,Giant,4,05/01/2021\n"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value of a /metrics answer."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def offline(settings: Settings) -> Settings:
    """Nothing listens on the Kafka port: events wait in the outbox, the broker is down."""
    return settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})


def test_upload_service_metrics(offline: Settings) -> None:
    with TestClient(create_upload(offline)) as client:
        assert client.get("/metrics").status_code == 401  # the token, as for the API
        headers = auth_headers(offline)
        files = {"file": ("sales.csv", CSV.encode(), "text/csv")}
        assert client.post("/uploads", files=files, headers=headers).status_code == 202
        answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    found = samples(answer.text)
    assert found[("salesflow_uploads_total", ())] == 1
    assert found[("salesflow_upload_bytes_total", ())] == len(CSV)
    assert found[("salesflow_uploads_by_status", (("status", "stored"),))] == 1
    assert found[("salesflow_preview_rejected_rows_total", (("reason", "bad_date"),))] == 1
    assert found[("salesflow_outbox_pending", ())] == 1
    post = (("method", "POST"), ("route", "/uploads"), ("status", "202"))
    assert found[("salesflow_http_request_duration_seconds_count", post)] == 1


def test_job_server_metrics(settings: Settings) -> None:
    fake = FakeSpark()
    fake.fail_with = TooManyRejectsError("too many", counts={"rows_read": 10})
    with TestClient(
        create_jobs(settings, engine=fake.engine(), report=Reports()),
        headers=auth_headers(settings),
    ) as client:
        job_id = client.post("/train", json={"upload_id": UPLOAD}).json()["job_id"]
        deadline = time.monotonic() + 10
        while client.get(f"/jobs/{job_id}").json()["status"] != "failed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        client.get("/forecast", params={"store_id": "s1", "product_id": "p1", "month": "2021-01"})
        found = samples(client.get("/metrics").text)
    failed = (("kind", "train"), ("status", "failed"))
    assert found[("salesflow_jobs_by_status", failed)] == 1
    assert found[("salesflow_job_duration_seconds_count", failed)] == 1
    every = (("kind", "train"), ("le", "+Inf"), ("status", "failed"))
    assert found[("salesflow_job_duration_seconds_bucket", every)] == 1
    forecasts = [k for k in found if k[0].endswith("_count") and ("route", "/forecast") in k[1]]
    assert forecasts, "no latency recorded for /forecast"


def test_dashboard_metrics_need_the_token_not_a_session(offline: Settings) -> None:
    def ready(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "ready", "checks": {}})

    app = create_dashboard(
        offline,
        upload_transport=httpx.MockTransport(ready),
        jobs_transport=httpx.MockTransport(ready),
    )
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        found = samples(client.get("/metrics", headers=auth_headers(offline)).text)
    assert found[("salesflow_service_up", (("service", "upload service"),))] == 1
    assert found[("salesflow_broker_up", ())] == 0
    assert not any(name == "salesflow_consumer_lag" for name, _ in found)  # unknown: absent
