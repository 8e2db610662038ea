"""Forecasts for real: a job server under uvicorn on the session's Spark, three trainings (an upload,
a second upload, a replay of the first), then answers over HTTP and the in-process == Spark proof.

Module-scoped: the trainings cost tens of seconds each and every test only reads their results.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import math
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from pyspark.sql import SparkSession
from typer.testing import CliRunner

from salesflow import cli
from salesflow.auth import auth_headers
from salesflow.clients.jobs import JobServerClient
from salesflow.config import Settings, get_settings
from salesflow.errors import InputError, NotFoundError, NothingToPredictError
from salesflow.registry import ModelRegistry
from salesflow.sales import names
from salesflow.sales.catalog import load_catalog
from salesflow.sales.contract import new_upload_id, upload_key
from salesflow.sales.generate import generate_sales
from salesflow.services.jobs.app import create_app
from salesflow.services.jobs.engine import lineage_path, spark_engine
from salesflow.serving.model import ModelFacts, ServedModel
from salesflow.serving.predict_csv import predict_csv
from salesflow.serving.service import MAX_QUERIES, ForecastService
from salesflow.spark.curated import curated_path
from salesflow.spark.predict import predict, predict_frame
from salesflow.storage import store_for
from tests.conftest import free_port
from tests.fixtures.servers import serving

pytestmark = pytest.mark.slow

HEADER = "product_id,product_name,product_price,store_id,store_name,quantity,date\n"
#: Start-up budget for uvicorn in a thread (it binds in well under a second).
START_TIMEOUT_S = 10
#: Budget for one small training with few trees on a shared local[2] machine.
TRAIN_TIMEOUT_S = 300
#: GET /forecast calls timed for the p50.
LATENCY_CALLS = 300
UNSEEN_STORE, UNSEEN_PRODUCT = "store-new", "product-new"


@dataclasses.dataclass
class System:
    settings: Settings
    client: JobServerClient
    registry: ModelRegistry
    upload_id: str
    jobs: list[dict[str, Any]]  # first train, second upload, replay of the first


def _store(settings: Settings, source: Path) -> tuple[str, str]:
    upload_id = new_upload_id()
    info = store_for(settings).put_file(upload_key(upload_id), source)
    assert info.sha256 is not None
    return upload_id, info.sha256


def _train(client: JobServerClient, job: dict[str, Any]) -> dict[str, Any]:
    assert job["created"] is True, job
    done = client.wait(job["job_id"], timeout=TRAIN_TIMEOUT_S)
    assert done["status"] == "succeeded", (done["error_code"], done["error"], done["log_tail"])
    return done


@pytest.fixture(scope="module")
def system(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("forecasts")
    settings = Settings(
        data_dir=tmp / "data",
        jobs_port=free_port(),
        auth_token=SecretStr("forecast-token-" + "x" * 20),
        num_trees=5,  # accuracy is not this module's subject
        predict_sync_max_bytes=64 * 1024,
        jobs_jit_warmup_runs=0,  # tests/integration/test_warmup.py has it
        train_requires_upload_record=False,  # no upload service here: files are put in the store
        _env_file=None,
    )
    registry = ModelRegistry(settings.warehouse_path / "models")
    engine = spark_engine(settings, registry)
    app = create_app(
        settings, engine=dataclasses.replace(engine, stop=lambda: None), report=lambda *_: None
    )
    with (
        serving(app, settings.jobs_port, timeout=START_TIMEOUT_S),
        JobServerClient(settings) as client,
    ):
        first, second = tmp / "first.csv", tmp / "second.csv"
        generate_sales(first, rows=4000, seed=1)
        generate_sales(
            second, rows=2000, seed=2, start=dt.date(2022, 4, 1), end=dt.date(2022, 9, 30)
        )
        upload_id, sha256 = _store(settings, first)
        jobs = [_train(client, client.train(upload_id, sha256))]
        other_id, other_sha = _store(settings, second)
        jobs.append(_train(client, client.train(other_id, other_sha)))
        # The replay goes through the CLI: `salesflow retrain` -> JobServerClient -> POST /train.
        with _cli_settings(settings):
            replayed = CliRunner().invoke(cli.app, ["retrain", upload_id, "--json"])
        assert replayed.exit_code == 0, replayed.output
        jobs.append(json.loads(replayed.output))
        assert jobs[-1]["status"] == "succeeded", jobs[-1]
        yield System(settings, client, registry, upload_id, jobs)


@contextmanager
def _cli_settings(settings: Settings) -> Iterator[None]:
    """The CLI's settings (read from the environment) pointed at this module's job server."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in settings.to_env().items():
            patch.setenv(name, value)
        get_settings.cache_clear()
        try:
            yield
        finally:
            get_settings.cache_clear()


def _catalog() -> tuple[list[str], list[str]]:
    catalog = load_catalog(None)
    return [s.id for s in catalog.stores], [p.id for p in catalog.products]


# --- replay ------------------------------------------------------------------------------------


def test_replay_creates_a_second_job_and_a_new_version(system: System) -> None:
    first, _, replay = system.jobs
    assert first["job_key"] == system.upload_id and first["replay"] is False
    assert replay["job_key"] == f"{system.upload_id}:replay:1" and replay["replay"] is True
    assert replay["upload_id"] == system.upload_id and replay["job_id"] != first["job_id"]
    assert replay["sha256"] == first["sha256"]
    versions = [v.version for v in system.registry.versions()]
    assert versions == ["v0001", "v0002", "v0003"]
    assert [j["model_version"] for j in system.jobs] == versions
    # Asking for the upload's training again (no replay) is still the first job.
    again = system.client.train(system.upload_id)
    assert again["created"] is False and again["job_id"] == first["job_id"]
    jobs = system.client.jobs(upload_id=system.upload_id)
    assert {j["job_id"] for j in jobs} == {first["job_id"], replay["job_id"]}
    with pytest.raises(NotFoundError):  # a replay needs the stored file
        system.client.retrain(new_upload_id())


# --- forecasts over HTTP -----------------------------------------------------------------------


def test_get_forecast_answers_with_interval_basis_and_lineage(system: System) -> None:
    stores, products = _catalog()
    active = system.client.models()["active"]
    answer = system.client.forecast(stores[0], products[0], month="2022-10")
    assert answer["model_version"] == active and answer["granularity"] == "month"
    (one,) = answer["answers"]
    assert one["period"] == "2022-10" and one["basis"] == "model"
    assert one["predicted_quantity"] >= 0
    lineage = answer["lineage"]
    assert lineage["model_version"] == active and lineage["trained_at"]
    meta = system.registry.get(active).metadata
    assert lineage["training_sources"] == meta["training_sources"] and lineage["date_range"]
    assert lineage["metrics"]["holdout"] is not None
    for lo, hi in one["intervals"].values():
        assert (lo is None and hi is None) or lo <= one["predicted_quantity"] <= hi
    by_date = system.client.forecast(stores[0], products[0], date="2022-10-31")
    assert by_date["answers"] == answer["answers"]
    unseen = system.client.forecast(UNSEEN_STORE, products[0], month="2022-10")["answers"][0]
    assert unseen["unknown_store"] is True and unseen["basis"] in ("product_mean", "model")
    old = system.client.forecast(stores[0], products[0], month="2022-10", model="v0001")
    assert old["model_version"] == "v0001" == old["lineage"]["model_version"]


def test_a_store_or_product_may_be_named(system: System) -> None:
    catalog = load_catalog(None)
    store, product = catalog.stores[2], catalog.products[0]
    by_id = system.client.forecast(store.id, product.id, month="2022-10")
    named = system.client.forecast(store.name.upper(), product.name, month="2022-10")
    assert named["answers"] == by_id["answers"]
    assert named["resolved"] == {
        "store": {"id": store.id, "name": store.name},
        "product": {"id": product.id, "name": product.name},
    }
    assert "resolved" not in by_id
    with pytest.raises(InputError, match=f"closest: {store.name} \\({store.id}\\)"):
        system.client.forecast(store.name[:-1] + "x", product.id, month="2022-10")
    series = system.client.series()
    assert series["names"]["stores"][store.id] == store.name


def test_post_forecast_answers_a_batch_and_refuses_bad_ones(system: System) -> None:
    stores, products = _catalog()
    queries = [
        {"store_id": s, "product_id": p, "month": f"2023-{m:02d}"}
        for s in stores
        for p in products
        for m in range(1, 13)
    ]
    answer = system.client.forecast_many(queries)
    assert len(answer["answers"]) == len(queries) and "lineage" in answer
    assert [a["period"] for a in answer["answers"][:12]] == [f"2023-{m:02d}" for m in range(1, 13)]
    headers = auth_headers(system.settings)
    url = system.settings.job_server_url + "/forecast"
    too_many = {"queries": [queries[0]] * (MAX_QUERIES + 1)}
    assert httpx.post(url, json=too_many, headers=headers, timeout=60).status_code == 413
    bad = {"queries": [queries[0], {"store_id": "s", "product_id": "p", "month": "2023-13"}]}
    refused = httpx.post(url, json=bad, headers=headers, timeout=10)
    assert refused.status_code == 400 and "query 1" in refused.json()["error"]["message"]
    with pytest.raises(InputError, match="exactly one of month"):
        system.client.forecast("s", "p")
    with pytest.raises(InputError, match="query 0: store_id is missing"):
        system.client.forecast_many([{"store_id": " ", "product_id": "p", "month": "2023-01"}])
    started = time.perf_counter()
    full = system.client.forecast_many([queries[0]] * MAX_QUERIES)
    print(f"POST /forecast with {MAX_QUERIES} queries: {time.perf_counter() - started:.3f} s")
    assert len(full["answers"]) == MAX_QUERIES


def test_get_forecast_latency_over_http(system: System) -> None:
    stores, products = _catalog()
    params = {"store_id": stores[1], "product_id": products[2], "month": "2022-12"}
    with httpx.Client(
        base_url=system.settings.job_server_url, headers=auth_headers(system.settings)
    ) as http:
        for _ in range(20):  # warm the connection and the model
            assert http.get("/forecast", params=params).status_code == 200
        samples = []
        for _ in range(LATENCY_CALLS):
            started = time.perf_counter()
            response = http.get("/forecast", params=params)
            samples.append(time.perf_counter() - started)
            assert response.status_code == 200
    p50, p99 = statistics.median(samples), sorted(samples)[int(len(samples) * 0.99)]
    print(f"GET /forecast over HTTP: p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms")


# --- predictions carry lineage -----------------------------------------------------------------


def _question(months: list[str], extra: str = "") -> str:
    stores, products = _catalog()
    lines = [HEADER]
    for s in stores:
        for p in products:
            for m in months:
                lines.append(f"{p},name,10,{s},store,2,{m}-15\n")
    return "".join(lines) + extra


def test_small_predictions_are_in_process_with_lineage_in_csv_and_json(
    system: System, tmp_path: Path
) -> None:
    ask = tmp_path / "ask.csv"
    ask.write_text(_question(["2022-10", "2022-11"], f"p9,n,1,{UNSEEN_STORE},x,1,2022-10-01\n"))
    answer = system.client.predict_csv(ask)
    assert isinstance(answer, bytes)
    rows = list(csv.DictReader(io.StringIO(answer.decode())))
    active = system.client.models()["active"]
    assert len(rows) == 9 * 2 + 1
    assert {r["model_version"] for r in rows} == {active} and all(r["trained_at"] for r in rows)
    assert {"lo_80", "hi_95", "basis", "clipped"} <= set(rows[0])
    as_json = system.client.predict_csv(ask, accept_json=True)
    assert isinstance(as_json, dict) and as_json["lineage"]["model_version"] == active
    assert as_json["unknown_stores"] == [UNSEEN_STORE] and as_json["rows_dropped"] == {}
    assert "model_version" not in as_json["rows"][0] and "basis" in as_json["rows"][0]


def test_large_predictions_are_spark_jobs_with_a_lineage_sidecar(
    system: System, tmp_path: Path
) -> None:
    months = [f"{y}-{m:02d}" for y in (2022, 2023) for m in range(1, 13)] * 12
    big = tmp_path / "big.csv"
    big.write_text(_question(months))
    assert big.stat().st_size > system.settings.predict_sync_max_bytes
    queued = system.client.predict_csv(big)
    assert isinstance(queued, dict) and queued["kind"] == "predict"
    done = system.client.wait(queued["job_id"], timeout=TRAIN_TIMEOUT_S)
    assert done["status"] == "succeeded", done
    assert done["lineage"]["model_version"] == done["model_version"]
    rows = list(csv.DictReader(io.StringIO(system.client.job_output(done["job_id"]).decode())))
    asked = list(csv.DictReader(io.StringIO(big.read_text())))
    assert {r["model_version"] for r in rows} == {done["model_version"]}
    # One answer row per input row, in the input's order, the input's columns first.
    assert [(r["store_id"], r["date"]) for r in rows] == [(r["store_id"], r["date"]) for r in asked]
    assert list(rows[0])[:7] == list(asked[0]) and rows[0]["period"] == asked[0]["date"][:7]
    output = system.settings.data_dir / "predict-outputs" / f"{done['job_id']}.csv"
    sidecar = json.loads(lineage_path(output).read_text())
    assert sidecar == done["lineage"]


# --- the in-process path equals Spark, for every version ----------------------------------------


def _frame_rows() -> list[tuple[str | None, str | None, int, int]]:
    stores, products = _catalog()
    return [
        (s, p, y, m)
        for s in [*stores, UNSEEN_STORE, None]
        for p in [*products, UNSEEN_PRODUCT]
        for y in (2021, 2022, 2023)
        for m in range(1, 13)
    ]


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def _compare(spark_rows: dict[tuple, dict], ours: dict[tuple, dict]) -> None:
    assert spark_rows.keys() == ours.keys()
    for key, want in spark_rows.items():
        got = ours[key]
        assert want.keys() == got.keys(), key
        bad = {c: (got[c], want[c]) for c in want if not _close(got[c], want[c])}
        assert not bad, f"{key}: in-process vs Spark differ in {bad}"


@pytest.mark.parametrize("fallback", [True, False], ids=["with-fallback", "model-only"])
def test_in_process_answers_equal_spark_for_every_version(
    system: System, spark: SparkSession, fallback: bool
) -> None:
    rows = _frame_rows()
    frame = spark.createDataFrame(rows, "store_id string, product_id string, year int, month int")
    for version in system.registry.versions():
        facts = ModelFacts.of(version, curated_path(system.settings))
        if not fallback:  # a version without means: unseen ids are answered by the model
            facts = dataclasses.replace(facts, fallback=None)
        assert (facts.fallback is not None) == fallback
        by_spark = {
            (r["store_id"], r["product_id"], r["year"], r["month"]): r.asDict()
            for r in predict_frame(version, frame, facts).collect()
        }
        served = dataclasses.replace(ServedModel.load(version), facts=facts)
        scored = served.score(*(list(c) for c in zip(*rows, strict=True)))
        ours = {}
        for i, key in enumerate(rows):
            want = by_spark[key]
            ours[key] = {
                **{c: want[c] for c in ("store_id", "product_id", "year", "month", "period")},
                **{c: want[c] for c in ("actual_quantity", "error", "model_version", "trained_at")},
                "predicted_quantity": float(scored.predicted[i]),
                "basis": scored.basis[i],
                "clipped": bool(scored.clipped[i]),
                "unknown_store": bool(scored.unknown_store[i]),
                "unknown_product": bool(scored.unknown_product[i]),
            }
            for level in facts.levels:
                lo, hi = (f"{side}_{float(level) * 100:g}" for side in ("lo", "hi"))
                low, high = float(scored.lower[level][i]), float(scored.upper[level][i])
                ours[key][lo] = None if math.isnan(low) else low
                ours[key][hi] = None if math.isnan(high) else high
        _compare(by_spark, ours)
        bases = {r["basis"] for r in by_spark.values()}
        if fallback:
            assert bases == {"model", "product_mean", "store_mean", "global_mean"}
            # Trained versions record month profiles: fallback answers carry intervals.
            assert any(r["lo_80"] is not None for r in by_spark.values() if r["basis"] != "model")
        else:  # unseen ids included, answered by the model
            assert bases == {"model"}
            assert any(r["unknown_store"] and r["unknown_product"] for r in by_spark.values())


def test_in_process_csv_predictions_equal_spark_for_every_version(
    system: System, spark: SparkSession, tmp_path: Path
) -> None:
    stores, products = _catalog()
    awkward = (
        f"{products[1]},n,1,{UNSEEN_STORE},x,1.5,2022-10-01\n"
        "p9,n,1, ,x,1,2022-10-01\n"  # blank store: dropped
        "p9,n,1,s,x,1,2022-10-32\n"  # bad date: dropped
        f"{products[0]},n,1,{stores[0]},x,abc,2022-10-02 10:00:00\n"  # bad quantity: no actual
        f"{UNSEEN_PRODUCT},n,1,{stores[0]},x,0.25,2022-11-30\n"
        f"{products[2]},n,1,{stores[1]},x,2,2022-11-03,extra,more\n"  # long: extras dropped
        f"{products[2]},n,1,{stores[1]}\n"  # short: no date, dropped
        f'{products[1]},"a, ""quoted""\nname",1,{stores[2]},x,4,2022-11-05\n'  # RFC 4180
    )
    source = tmp_path / "awkward.csv"
    source.write_text(_question(["2022-10", "2022-11", "2023-02"], awkward))
    service = ForecastService(system.registry, history_root=curated_path(system.settings))
    for version in system.registry.versions():
        result = predict(
            spark, system.settings, str(source), registry=system.registry, version=version.version
        )
        by_spark = {
            (r["store_id"], r["product_id"], r["year"], r["month"]): r.asDict()
            for r in result.frame.collect()
        }
        ours = predict_csv(service, source, version.version)
        assert ours.columns == result.frame.columns
        assert ours.rows_dropped == {"bad_date": 2, "missing_store_id": 1}
        assert ours.unknown_stores == result.unknown_stores == [UNSEEN_STORE]
        assert ours.unknown_products == result.unknown_products == [UNSEEN_PRODUCT]
        assert ours.lineage == result.lineage
        _compare(
            by_spark,
            {(r["store_id"], r["product_id"], r["year"], r["month"]): r for r in ours.rows},
        )


def test_cli_forecast_prints_quantity_interval_basis_and_version(system: System) -> None:
    stores, products = _catalog()
    active = system.client.models()["active"]
    args = ["forecast", "--store", stores[0], "--product", products[0], "--month", "2022-10"]
    with _cli_settings(system.settings):
        shown = CliRunner().invoke(cli.app, args, env={"COLUMNS": "200"})
        as_json = CliRunner().invoke(cli.app, [*args, "--json"])
        refused = CliRunner().invoke(cli.app, args[:5])
    assert shown.exit_code == 0, shown.output
    answer = json.loads(as_json.output)
    quantity = answer["answers"][0]["predicted_quantity"]
    assert f"{quantity:,.1f}" in shown.output and f"model {active}" in shown.output
    assert "basis model" in shown.output
    assert refused.exit_code != 0 and "exactly one of --month" in refused.output


def test_per_row_predictions_keep_the_input_order_and_equal_spark(
    system: System, spark: SparkSession, tmp_path: Path
) -> None:
    stores, products = _catalog()
    source = tmp_path / "rows.csv"
    source.write_text(
        "date,store_id,product_id,my_ref\n"  # ids and a date only, in another order, plus a column
        f"2022-11-03,{stores[1]},{products[2]},a\n"
        "2022-10-32,s,p9,b\n"  # bad date: dropped, listed
        f"2022-10-01,{stores[0]},{products[0]},c\n"
        f"2022-11-20,{stores[1]},{products[2]},d\n"  # the same month as row a
        f"2022-10-01,,{products[0]},e\n"  # missing store: dropped, listed
        f"2022-10-05,{UNSEEN_STORE},{products[1]},f\n"
    )
    service = ForecastService(system.registry, history_root=curated_path(system.settings))
    version = system.registry.require_active().version
    known = names.load(system.settings.warehouse_path / "curated")
    ours = predict_csv(service, source, version, per_month=False, names=known)
    result = predict(spark, system.settings, str(source), registry=system.registry, per_month=False)
    assert ours.columns == result.frame.columns
    assert ours.columns[:4] == ["date", "store_id", "product_id", "my_ref"]
    assert ours.columns[4:7] == ["store_name", "product_name", "period"]  # names filled in
    assert ours.columns[-1] == "dropped_reason"
    by_spark = [r.asDict() for r in result.frame.collect()]
    assert [r["my_ref"] for r in ours.rows] == [r["my_ref"] for r in by_spark] == list("abcdef")
    for got, want in zip(ours.rows, by_spark, strict=True):
        bad = {c: (got[c], want[c]) for c in want if not _close(got[c], want[c])}
        assert not bad, f"row {want['my_ref']}: in-process vs Spark differ in {bad}"
    a, b, _, d, e, f = ours.rows
    assert a["predicted_quantity"] == d["predicted_quantity"] and a["period"] == "2022-11"
    assert b["dropped_reason"] == "bad_date" and b["predicted_quantity"] is None
    assert e["dropped_reason"] == "missing_store_id" and f["unknown_store"] is True
    assert a["store_name"] == known.name_of("stores", stores[1]) is not None
    assert a["product_name"] == known.name_of("products", products[2]) is not None
    assert f["store_name"] is None and f["product_name"] is not None and b["store_name"] is None
    assert (
        ours.drops.to_dict()
        == result.drops.to_dict()
        == {
            "bad_date": {"rows": 1, "first_lines": [3]},
            "missing_store_id": {"rows": 1, "first_lines": [6]},
        }
    )


def test_a_file_whose_rows_are_all_dropped_is_refused_with_reasons_and_lines(
    system: System, spark: SparkSession, tmp_path: Path
) -> None:
    source = tmp_path / "dropped.csv"
    source.write_text("store_id,product_id,date\ns1,p1,2022-13-01\n,p1,2022-01-01\ns2,p2,soon\n")
    want = r"all 3 rows were dropped.*bad_date: 2 rows \(lines 2, 4\); missing_store_id: 1 row"
    with pytest.raises(NothingToPredictError, match=want):
        predict(spark, system.settings, str(source), registry=system.registry)
    service = ForecastService(system.registry, history_root=curated_path(system.settings))
    with pytest.raises(NothingToPredictError, match=want):
        predict_csv(service, source, per_month=False)
    refused = httpx.post(
        f"{system.settings.job_server_url}/predict",
        files={"file": ("dropped.csv", source.read_bytes(), "text/csv")},
        headers=auth_headers(system.settings),
        timeout=60,
    )
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "nothing_to_predict" and "lines 2, 4" in error["message"]
    with _cli_settings(system.settings):
        ran = CliRunner().invoke(cli.app, ["predict", str(source)])
    assert ran.exit_code == 1 and isinstance(ran.exception, NothingToPredictError)
