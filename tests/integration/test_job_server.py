"""The job server for real: uvicorn on a free port, real Spark, a 20k-row upload in a file:// store."""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from pyspark.sql import SparkSession

from salesflow.clients.jobs import JobServerClient
from salesflow.config import Settings
from salesflow.errors import TooManyRejectsError
from salesflow.registry import ModelRegistry
from salesflow.sales.catalog import load_catalog
from salesflow.sales.contract import new_upload_id, upload_key
from salesflow.sales.generate import generate_sales
from salesflow.services.jobs.app import create_app
from salesflow.services.jobs.engine import spark_engine
from salesflow.storage import store_for
from tests.conftest import free_port
from tests.fixtures.servers import serving

pytestmark = pytest.mark.slow

HEADER = "product_id,product_name,product_price,store_id,store_name,quantity,date\n"
#: Start-up budget for uvicorn in a thread (it binds in well under a second).
START_TIMEOUT_S = 10
#: Budget for one 20k-row training with few trees on local[2] (about 10 s warm).
TRAIN_TIMEOUT_S = 240


@dataclasses.dataclass
class Server:
    settings: Settings
    client: JobServerClient
    reports: list[tuple[str, str, dict[str, Any]]]


@pytest.fixture
def server(spark: SparkSession, tmp_path: Path) -> Iterator[Server]:
    """A job server on the test run's SparkSession (left running for other tests at shutdown)."""
    settings = Settings(
        data_dir=tmp_path / "data",
        jobs_port=free_port(),
        auth_token=SecretStr("integration-token-" + "x" * 20),
        num_trees=5,  # accuracy is not this test's subject
        predict_sync_max_bytes=4096,
        jobs_jit_warmup_runs=0,  # tests/integration/test_warmup.py has it
        train_requires_upload_record=False,  # no upload service here: files are put in the store
        _env_file=None,
    )
    engine = spark_engine(settings, ModelRegistry(settings.warehouse_path / "models"))
    reports: list[tuple[str, str, dict[str, Any]]] = []
    app = create_app(
        settings,
        engine=dataclasses.replace(engine, stop=lambda: None),
        report=lambda upload_id, status, fields: reports.append((upload_id, status, fields)),
    )
    with (
        serving(app, settings.jobs_port, timeout=START_TIMEOUT_S),
        JobServerClient(settings) as client,
    ):
        yield Server(settings, client, reports)


def store_upload(settings: Settings, source: Path) -> tuple[str, str]:
    """Put a file where the upload service would: key uploads/<id>.csv. Returns (id, sha256)."""
    upload_id = new_upload_id()
    info = store_for(settings).put_file(upload_key(upload_id), source)
    assert info.sha256 is not None
    return upload_id, info.sha256


def question_csv(months: list[str]) -> tuple[str, set[tuple[str, str, str]]]:
    """One sale per store x product x month of the default catalogue, and the keys asked."""
    catalog = load_catalog(None)
    lines, asked = [HEADER], set()
    for store in catalog.stores:
        for product in catalog.products:
            for month in months:
                lines.append(
                    f"{product.id},{product.name},{product.price},{store.id},{store.name},"
                    f"1,{month}-15\n"
                )
                asked.add((store.id, product.id, month))
    return "".join(lines), asked


def test_train_then_predict(server: Server, tmp_path: Path) -> None:
    settings, client = server.settings, server.client
    sales = tmp_path / "sales.csv"
    assert generate_sales(sales, rows=20_000, seed=7).rows == 20_000
    upload_id, sha256 = store_upload(settings, sales)

    started = time.monotonic()
    job = client.train(upload_id, sha256)
    assert job["created"] is True and job["status"] in ("queued", "running")
    done = client.wait(job["job_id"], timeout=TRAIN_TIMEOUT_S)
    trained_in = time.monotonic() - started
    assert done["status"] == "succeeded", done
    assert done["rows_read"] == 20_000 and done["rows_rejected"] == 0
    assert set(done["metrics"]["model"]) >= {"rmse", "mae", "wape"}  # accuracy: test_train_predict
    assert any("saving the model" in line for line in done["log_tail"])
    version = done["model_version"]
    models = client.models()
    assert models["active"] == version
    assert [m["version"] for m in models["models"]] == [version]
    assert server.reports[-1][:2] == (upload_id, "trained")
    assert server.reports[-1][2]["model_version"] == version
    print(f"20k-row train job: {trained_in:.1f} s end to end; stages {done['timings']}")

    # Small question: answered at once, one prediction per store/product/month asked.
    question, asked = question_csv(["2022-04", "2022-05"])
    assert len(question.encode()) <= settings.predict_sync_max_bytes
    ask = tmp_path / "ask.csv"
    ask.write_text(question)
    answer = client.predict_csv(ask)
    assert isinstance(answer, bytes)
    rows = list(csv.DictReader(io.StringIO(answer.decode())))
    assert {(r["store_id"], r["product_id"], r["period"]) for r in rows} == asked
    assert len(rows) == len(asked)
    assert all(float(r["predicted_quantity"]) >= 0 for r in rows)
    as_json = client.predict_csv(ask, accept_json=True)
    assert isinstance(as_json, dict) and as_json["model_version"] == version
    assert {(r["store_id"], r["product_id"], r["period"]) for r in as_json["rows"]} == asked
    assert as_json["unknown_stores"] == []

    # Large question: becomes a predict job whose CSV is fetched afterwards.
    big_question, big_asked = question_csv([f"2022-{m:02d}" for m in range(4, 13)])
    assert len(big_question.encode()) > settings.predict_sync_max_bytes
    big = tmp_path / "big.csv"
    big.write_text(big_question)
    queued = client.predict_csv(big)
    assert isinstance(queued, dict) and queued["kind"] == "predict"
    finished = client.wait(queued["job_id"], timeout=120)
    assert finished["status"] == "succeeded" and finished["rows"] == len(big_asked)
    output = list(csv.DictReader(io.StringIO(client.job_output(queued["job_id"]).decode())))
    assert {(r["store_id"], r["product_id"], r["period"]) for r in output} == big_asked

    # A failing run is recorded with its code and never touches the active model.
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "p1,Radiator,2000,s1,Giant,3,not-a-date\n" * 50)
    bad_id, bad_sha = store_upload(settings, bad)
    failed = client.wait(client.train(bad_id, bad_sha)["job_id"], timeout=TRAIN_TIMEOUT_S)
    assert failed["status"] == "failed"
    assert failed["error_code"] == TooManyRejectsError.code
    assert "rejected" in failed["error"] and "Traceback" not in failed["error"]
    after = client.models()
    assert after["active"] == version and len(after["models"]) == 1
    assert server.reports[-1][:2] == (bad_id, "failed")
