"""`salesflow status`, `salesflow jobs` and the dashboard's API against real services: the upload
service, the job server (on the test run's SparkSession), the upload consumer and the Tansu broker,
on free ports."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from pyspark.sql import SparkSession
from typer.testing import CliRunner, Result

from salesflow import cli
from salesflow.auth import auth_headers
from salesflow.cli.system import status_rows
from salesflow.clients.jobs import JobServerClient
from salesflow.clients.upload import UploadClient
from salesflow.config import Settings, get_settings
from salesflow.registry import ModelRegistry
from salesflow.sales.generate import generate_sales
from salesflow.services.consumer.worker import build_handler, consume
from salesflow.services.dashboard.app import create_app as create_dashboard
from salesflow.services.jobs.app import create_app as create_jobs_app
from salesflow.services.jobs.engine import spark_engine
from salesflow.services.upload.app import create_app as create_upload_app
from tests.conftest import free_port
from tests.fixtures.servers import serving
from tests.unit.test_metrics import samples

pytestmark = pytest.mark.slow

#: Budget for the job server's Spark warm-up and one small training on local[2].
READY_TIMEOUT_S = 120
TRAIN_TIMEOUT_S = 240


@contextlib.contextmanager
def consuming(settings: Settings) -> Iterator[None]:
    """The real upload consumer in a thread."""
    handler, close = build_handler(settings)
    stop = threading.Event()
    thread = threading.Thread(target=consume, args=(settings, handler, stop), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
        close()


@pytest.fixture
def system(
    spark: SparkSession,
    kafka_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Settings]:
    """Upload service, job server, consumer and broker up (no dashboard); the CLI points at them."""
    settings = Settings(
        data_dir=tmp_path / "data",
        kafka_bootstrap_servers=kafka_settings.kafka_bootstrap_servers,
        kafka_uploads_topic=kafka_settings.kafka_uploads_topic,
        kafka_dlq_topic=kafka_settings.kafka_dlq_topic,
        kafka_consumer_group=kafka_settings.kafka_consumer_group,
        upload_port=free_port(),
        jobs_port=free_port(),
        dashboard_port=free_port(),
        num_trees=5,  # accuracy is not this test's subject: a small, quick training
        max_depth=5,
        backtest_windows=1,
        holdout_months=3,  # the one window: no extra holdout fit
        promotion_gate=False,  # nor is the gate: the first model becomes the active one
        jobs_jit_warmup_runs=0,  # tests/integration/test_warmup.py has it
        auth_token=SecretStr("cli-system-token-" + "x" * 20),
        _env_file=None,
    )
    engine = spark_engine(settings, ModelRegistry(settings.warehouse_path / "models"))
    reporter = UploadClient(settings)  # the job server's status reports, closed below

    def report(upload_id: str, status: str, fields: dict[str, Any]) -> None:
        reporter.report_status(upload_id, status, **fields)

    jobs_app = create_jobs_app(
        settings, engine=dataclasses.replace(engine, stop=lambda: None), report=report
    )
    monkeypatch.chdir(tmp_path)
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        with (
            serving(jobs_app, settings.jobs_port),
            serving(create_upload_app(settings), settings.upload_port),
            consuming(settings),
        ):
            yield settings
    finally:
        reporter.close()
        get_settings.cache_clear()


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.app, list(args), env={"COLUMNS": "220"})


def wait_until(condition: Any, timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.5)
    raise AssertionError(message)


def test_status_and_jobs_against_running_services(system: Settings, tmp_path: Path) -> None:
    source = tmp_path / "sales.csv"
    generate_sales(source, rows=5000, seed=11)
    with UploadClient(system) as client:
        upload_id = client.upload(source)["upload_id"]

        def terminal() -> dict[str, Any] | None:
            record = client.get(upload_id)
            return record if record["status"] in ("trained", "failed", "rejected") else None

        record = wait_until(terminal, TRAIN_TIMEOUT_S, "the upload never finished")

    def all_up() -> dict[str, Any] | None:
        result = invoke("status", "--json")
        answer: dict[str, Any] = json.loads(result.stdout)
        return answer if result.exit_code == 0 else None

    answer = wait_until(all_up, READY_TIMEOUT_S, "status never reported every required part up")
    table = invoke("status", "--wide")
    assert table.exit_code == 0, table.output
    assert answer["down"] == [] and answer["ok"] is True
    by_name = {s["name"]: s for s in answer["services"]}
    assert by_name["upload service"]["ok"] and by_name["job server"]["ok"]
    assert by_name["dashboard"]["status"] == "unreachable"  # optional: shown, not failing
    assert answer["broker"]["reachable"] is True
    assert answer["consumer"]["running"] is True and answer["consumer"]["lag"] == 0
    active = ModelRegistry(system.warehouse_path / "models").active()
    shown = answer["active_model"]
    assert active is not None and shown is not None and answer["models_error"] is None
    assert shown["version"] == active.version
    # The details come from the job server's /models: the backtest without its per-series rows.
    assert shown["backtest"]["skill"] == active.metadata["backtest"]["skill"]
    assert "per_series" not in shown["backtest"]
    # The table shows the JSON's data: one line per part with its state and address.
    lines = table.stdout.splitlines()
    for row in status_rows(answer):
        line = next(x for x in lines if f" {row['part']}" in x and row["address"] in x)
        assert row["state"] in line and (" yes " in line) == (row["up"] is True), line
    assert f"active model: {active.version}" in table.stdout

    listed = invoke("jobs", "--json")
    jobs_table = invoke("jobs", "--upload", upload_id[:8], "--wide")
    assert listed.exit_code == 0 and jobs_table.exit_code == 0, listed.output
    jobs = [j for j in json.loads(listed.stdout) if j["upload_id"] == upload_id]
    assert len(jobs) == 1 and jobs[0]["kind"] == "train"
    assert jobs[0]["model_version"] == record.get("model_version")
    line = next(x for x in jobs_table.stdout.splitlines() if jobs[0]["job_id"] in x)
    assert jobs[0]["status"] in line and upload_id in line


def test_the_dashboard_answers_from_the_job_server_alone(system: Settings, tmp_path: Path) -> None:
    source = tmp_path / "sales.csv"
    generate_sales(source, rows=3000, seed=5)
    with UploadClient(system) as client:
        upload_id = client.upload(source)["upload_id"]
        wait_until(
            lambda: client.get(upload_id)["status"] in ("trained", "failed"),
            TRAIN_TIMEOUT_S,
            "the upload never finished",
        )
        assert client.get(upload_id)["status"] == "trained"
    # A dashboard told of a remote warehouse it cannot reach: whatever it shows came over HTTP.
    own = system.model_copy(update={"warehouse_url": "s3://nowhere/warehouse"})
    with (
        JobServerClient(system) as jobs,
        TestClient(create_dashboard(own)) as dashboard,
    ):
        code = dashboard.post("/login-codes", headers=auth_headers(own)).json()["code"]
        dashboard.get("/login", params={"code": code})
        version = jobs.models()["models"][0]["version"]
        activated = dashboard.post(f"/api/models/{version}/activate", json={"reason": "checked"})
        assert activated.status_code == 200, activated.text
        models = dashboard.get("/api/models").json()
        assert models == jobs.models()
        assert models["active"] == version and models["models"][0]["backtest"]["windows"]
        assert (models["history"][-1]["version"], models["history"][-1]["reason"]) == (
            version,
            "checked",
        )
        series = dashboard.get("/api/series").json()
        assert series == jobs.series() and series["stores"]
        store, product = series["stores"][0], series["products"][0]
        query = {"store_id": store, "product_id": product}
        history = dashboard.get("/api/history", params=query).json()
        assert history == jobs.history(store, product)
        assert sum(m["quantity"] for m in history["months"]) > 0

        # Every service's /metrics, scraped as Prometheus would (the bearer token).
        forecast = dashboard.get("/api/forecast", params={**query, "month": "2030-01"})
        assert forecast.status_code in (200, 404)
        scraped = {
            "upload": httpx.get(
                f"{system.upload_service_url}/metrics", headers=auth_headers(system)
            ),
            "jobs": httpx.get(f"{system.job_server_url}/metrics", headers=auth_headers(system)),
            "dashboard": dashboard.get("/metrics", headers=auth_headers(system)),
        }
    assert all(answer.status_code == 200 for answer in scraped.values()), scraped
    upload, jobs_text, board = (samples(a.text) for a in scraped.values())
    assert upload[("salesflow_uploads_by_status", (("status", "trained"),))] == 1
    assert upload[("salesflow_upload_bytes_total", ())] == source.stat().st_size
    trained = (("kind", "train"), ("status", "succeeded"))
    assert jobs_text[("salesflow_job_duration_seconds_count", trained)] == 1
    assert any(labels and ("route", "/forecast") in labels for _, labels in jobs_text)
    assert board[("salesflow_broker_up", ())] == 1
    assert board[("salesflow_consumer_lag", ())] == 0  # the one event was handled and committed
