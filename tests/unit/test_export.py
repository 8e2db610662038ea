"""The bulk forecast export: every series for the next N months from a table version, as CSV and
Parquet, its refusals before any scoring, and the job server's route. No Spark, no training."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from salesflow.auth import auth_headers
from salesflow.config import Settings
from salesflow.errors import ExportTooLargeError, HorizonError, InputError
from salesflow.registry import ModelRegistry, ModelVersion
from salesflow.services.jobs.app import create_app
from salesflow.serving import export
from salesflow.serving.export import export_columns, plan_export, write_export
from salesflow.serving.history import curated_root, series_pairs
from salesflow.serving.service import ForecastService
from salesflow.serving.table import period_label
from tests.fixtures.forecast_tables import NOT_HELD, publish_table_version
from tests.fixtures.servers import serving
from tests.unit.test_cli import invoke
from tests.unit.test_history import write_source
from tests.unit.test_jobs_api import FakeSpark

SERIES = [("s1", "p1"), ("s1", "p2"), NOT_HELD, ("=cmd", "p1")]


@pytest.fixture
def table_version(tmp_path: Path) -> tuple[ForecastService, ModelVersion, dict[str, Any]]:
    registry = ModelRegistry(tmp_path / "models")
    version, columns = publish_table_version(registry)
    return ForecastService(registry), version, columns


def test_every_series_and_month_is_written_with_the_tables_numbers(
    table_version: tuple[ForecastService, ModelVersion, dict[str, Any]], tmp_path: Path
) -> None:
    service, version, columns = table_version
    plan = plan_export(service, SERIES, 3)
    assert plan.rows == 12 and plan.periods == ["2024-01", "2024-02", "2024-03"]
    out = write_export(plan, tmp_path / "out.parquet", "parquet")
    table = pq.read_table(out)
    assert table.column_names == export_columns(("0.8", "0.95"))
    rows = table.to_pylist()
    held = {
        (s, p, period_label(t, "month")): (q, hi)
        for s, p, t, q, hi in zip(
            columns["store_id"], columns["product_id"], columns["period_index"],
            columns["predicted_quantity"], columns["hi_95"], strict=True,
        )
    }  # fmt: skip
    for row in rows[:6]:  # s1 x p1, p2: the table's own numbers
        q, hi = held[(row["store_id"], row["product_id"], row["period"])]
        assert row["basis"] == "model" and row["predicted_quantity"] == q and row["hi_95"] == hi
    assert {r["basis"] for r in rows[6:9]} == {"store_mean"}  # held store and product, not together
    assert rows[9]["store_id"] == "=cmd" and rows[9]["unknown_store"]
    assert {r["model_version"] for r in rows} == {version.version}
    assert not list(tmp_path.glob(".*tmp*"))


def test_csv_escapes_formula_ids_and_leaves_missing_bounds_empty(
    table_version: tuple[ForecastService, ModelVersion, dict[str, Any]], tmp_path: Path
) -> None:
    service, _, columns = table_version
    plan = plan_export(service, SERIES, 2)
    text = write_export(plan, tmp_path / "out.csv", "csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == export_columns(("0.8", "0.95")) and len(rows) == 8
    assert rows[6]["store_id"] == "'=cmd"
    assert np.isnan(columns["lo_80"][1]) and rows[1]["lo_80"] == ""  # the fixture's NaN bound
    assert rows[0]["clipped"] == "false"


@pytest.mark.parametrize("months", [0, 25, 7])
def test_a_horizon_outside_1_to_24_or_the_tables_is_refused(
    table_version: tuple[ForecastService, ModelVersion, dict[str, Any]], months: int
) -> None:
    with pytest.raises(HorizonError) as caught:
        plan_export(table_version[0], SERIES, months)
    assert caught.value.code == "bad_horizon"
    if months == 7:
        assert "at most 6 months from 2024-01" in str(caught.value)


def test_too_many_rows_and_no_series_are_refused_before_scoring(
    table_version: tuple[ForecastService, ModelVersion, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = table_version[0]
    with pytest.raises(InputError, match="no series"):
        plan_export(service, [], 3)
    monkeypatch.setattr(export, "MAX_ROWS", 11)
    with pytest.raises(ExportTooLargeError, match="4 series x 3 months is 12 rows"):
        plan_export(service, SERIES, 3)


def test_chunks_cover_every_series(
    table_version: tuple[ForecastService, ModelVersion, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(export, "CHUNK_SERIES", 3)
    plan = plan_export(table_version[0], SERIES, 6)
    table = pq.read_table(write_export(plan, tmp_path / "x.parquet", "parquet"))
    assert table.num_rows == 24
    assert table.column("store_id").to_pylist()[-1] == "=cmd"


def test_series_pairs_are_the_histories_store_product_pairs(tmp_path: Path) -> None:
    root = tmp_path / "monthly"
    write_source(root, "source_sha256=" + "a" * 64, [("10", "p1", 2021, 1, 1.0)])
    write_source(
        root, "source_sha256=" + "b" * 64, [("2", "p1", 2021, 1, 1), ("2", "p1", 2021, 2, 3)]
    )
    assert series_pairs(root) == [("2", "p1"), ("10", "p1")]
    assert series_pairs(tmp_path / "none") == []


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, engine=FakeSpark().engine(), report=lambda *_: None)
    with TestClient(app, headers=auth_headers(settings)) as test_client:
        yield test_client


def test_the_route_sends_a_file_and_refuses_with_codes(
    client: TestClient, settings: Settings
) -> None:
    assert client.get("/forecast/export").json()["error"]["code"] == "model_not_found"
    publish_table_version(ModelRegistry(settings.warehouse_path / "models"))
    assert (
        client.get("/forecast/export").json()["error"]["code"] == "invalid_input"
    )  # no history yet
    write_source(
        curated_root(settings.warehouse_path),
        "source_sha256=" + "a" * 64,
        [("s1", "p1", 2023, 12, 4.0), ("s2", "p2", 2023, 12, 5.0)],
    )
    answer = client.get("/forecast/export", params={"months": 4})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-row-count"] == "8"
    assert "forecasts-v0001-2024-01-4m.csv" in answer.headers["content-disposition"]
    assert len(answer.text.splitlines()) == 9
    parquet = client.get("/forecast/export", params={"months": 2, "format": "parquet"})
    assert pq.read_table(io.BytesIO(parquet.content)).num_rows == 4
    refused = client.get("/forecast/export", params={"months": 30})
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "bad_horizon")
    assert client.get("/forecast/export", params={"format": "xlsx"}).status_code == 422
    assert not list((settings.data_dir / "predict-outputs").glob("export-*"))
    whole = client.get("/forecast/export")  # no months: 12, capped at the table's 6
    assert (
        whole.headers["x-row-count"] == "12"
        and "2024-01-6m" in whole.headers["content-disposition"]
    )


def test_the_cli_saves_csv_or_parquet_and_prints_refusals(
    cli_settings: Settings, tmp_path: Path
) -> None:
    publish_table_version(ModelRegistry(cli_settings.warehouse_path / "models"))
    write_source(
        curated_root(cli_settings.warehouse_path),
        "source_sha256=" + "a" * 64,
        [("s1", "p1", 2023, 12, 4.0), ("s2", "p2", 2023, 12, 5.0)],
    )
    app = create_app(cli_settings, engine=FakeSpark().engine(), report=lambda *_: None)
    with serving(app, cli_settings.jobs_port):
        saved = invoke("export", "--months", "3", "-o", str(tmp_path / "f.parquet"))
        as_csv = invoke("export", "-o", str(tmp_path / "f.txt"), "--format", "csv", "--json")
        refused = invoke("export", "--months", "25", "-o", str(tmp_path / "no.csv"))
        missing = invoke("export", "--months", "5", "--model", "v9", "-o", str(tmp_path / "x.csv"))
    assert saved.exit_code == 0, saved.output
    assert "wrote 6 forecasts" in saved.stdout and "model v0001, parquet" in saved.stdout
    assert pq.read_table(tmp_path / "f.parquet").num_rows == 6
    assert json.loads(as_csv.stdout)["rows"] == "12"
    header = next(csv.reader(io.StringIO((tmp_path / "f.txt").read_text())))
    assert header[:3] == ["store_id", "product_id", "period"]
    assert refused.exit_code != 0 and not (tmp_path / "no.csv").exists()  # typer's 1-24 check
    assert getattr(missing.exception, "code", None) == "model_not_found"
    assert not list(tmp_path.glob(".*part"))
