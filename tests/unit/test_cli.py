"""The CLI for people and scripts: `uploads` from a real upload service, `--json` equal to the
table's data, progress on stderr only, and day-level models (`train --granularity`, `models` per
granularity, `models coherence`, `forecast --date`). `status` is in test_cli_status.py."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession
from typer.testing import CliRunner, Result

from salesflow import cli
from salesflow.cli import output as cli_output
from salesflow.cli.forecasting import TRAIN_STAGES, print_train
from salesflow.cli.output import StageProgress
from salesflow.clients.upload import UploadClient
from salesflow.config import Settings, get_settings
from salesflow.registry import ModelRegistry
from salesflow.sales.generate import generate_sales
from salesflow.services.jobs.app import create_app as create_job_server
from salesflow.services.jobs.db import JobDB
from salesflow.services.upload.app import create_app
from salesflow.spark.train import TrainResult
from tests.fixtures.servers import serving
from tests.unit.test_jobs_api import FakeSpark

#: Wide enough that no table cell wraps (assertions look for whole values on one line).
WIDE = {"COLUMNS": "220"}


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli.app, list(args), env={**WIDE, **(env or {})})


@contextlib.contextmanager
def upload_service(settings: Settings) -> Iterator[None]:
    """The real upload service on settings.upload_port, in a thread."""
    with serving(create_app(settings), settings.upload_port):
        yield


def test_uploads_lists_the_upload_services_records_as_table_and_json(
    cli_settings: Settings, tmp_path: Path
) -> None:
    source = tmp_path / "sales.csv"
    generate_sales(source, rows=200, seed=3)
    with upload_service(cli_settings):
        with UploadClient(cli_settings) as client:
            stored = client.upload(source)
        table = invoke("uploads", "--wide")
        as_json = invoke("uploads", "--json", "--limit", "5")
        filtered = invoke("uploads", "--json", "--status", "trained")
    assert table.exit_code == 0 and as_json.exit_code == 0, table.output + as_json.output
    records = json.loads(as_json.stdout)
    assert [r["upload_id"] for r in records] == [stored["upload_id"]]
    row = next(line for line in table.stdout.splitlines() if stored["upload_id"] in line)
    assert (
        "sales.csv" in row and records[0]["status"] in row and f"{source.stat().st_size:,}" in row
    )
    assert json.loads(filtered.stdout) == []


def test_uploads_says_which_service_is_unreachable(cli_settings: Settings) -> None:
    result = CliRunner().invoke(cli.app, ["uploads"])
    assert result.exit_code != 0
    assert "cannot reach the upload service" in str(result.exception)


def test_generate_json_on_stdout_and_progress_on_stderr_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "sales.csv"
    # Make stderr a terminal, as in a shell: rich then draws its progress bar there.
    monkeypatch.setattr(cli_output.err, "is_interactive", True)
    result = invoke(
        "generate", "-o", str(output), "--rows", "3000", "--json", env={"TTY_COMPATIBLE": "1"}
    )
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)  # nothing but the JSON on stdout
    assert stats["rows"] == 3000 and stats["path"] == str(output)
    assert stats["bytes"] == output.stat().st_size
    assert "generating" in result.stderr
    assert "generating" not in result.stdout


def test_train_stage_bar_follows_the_cores_messages(capsys: pytest.CaptureFixture[str]) -> None:
    messages = [
        ("starting Spark", "start"),
        ("reading, validating and aggregating sales.csv", "read"),
        ("adding to the curated history", "aggregate"),
        ("backtesting 3 windows of 3 months", "backtest"),
        ("the candidate beats seasonal-naive", "backtest"),  # unknown: the stage stays
        ("fitting the final model on all data", "fit"),
        ("reading, validating and aggregating late.csv", "fit"),  # never back
        ("saving the model", "save"),
    ]
    seen = []
    with StageProgress(TRAIN_STAGES) as progress:
        for message, _ in messages:
            progress(message)
            seen.append(TRAIN_STAGES[progress.current][0])
    assert seen == [stage for _, stage in messages]
    assert capsys.readouterr().out == ""  # the bar never touches stdout


def test_config_json_is_the_tables_data_with_the_token_hidden(cli_settings: Settings) -> None:
    table = invoke("config")
    rows = json.loads(invoke("config", "--json").stdout)
    by_name = {r["setting"]: r for r in rows}
    assert by_name["auth_token"]["value"] == "***"
    assert "cli-test-token" not in table.stdout
    assert by_name["upload_port"] == {
        "setting": "upload_port",
        "variable": "SALESFLOW_UPLOAD_PORT",
        "value": cli_settings.upload_port,
    }
    for row in rows:
        assert row["variable"] in table.stdout


# --- day-level models --------------------------------------------------------------------------

COHERENCE: dict[str, Any] = {
    "month_version": "v0001",
    "months": ["2024-03"],
    "method": "day sum / month forecast",
    "summary": {
        "pairs": 2,
        "rows": 2,
        "total_day_sum": 196.0,
        "total_month_forecast": 200.0,
        "total_ratio": 0.98,
        "ratio_min": 0.9,
        "ratio_median": 0.99,
        "ratio_max": 1.0625,
        "mean_abs_diff": 7.0,
        "max_abs_diff": 10.0,
    },
    "rows": [
        {"store_id": "s1", "product_id": "p1", "month": "2024-03", "days": 31,
         "day_sum": 90.0, "month_forecast": 100.0, "ratio": 0.9, "abs_diff": 10.0},
        {"store_id": "s1", "product_id": "p2", "month": "2024-03", "days": 31,
         "day_sum": 106.25, "month_forecast": 100.0, "ratio": 1.0625, "abs_diff": 6.25},
    ],
}  # fmt: skip


def _publish(registry: ModelRegistry, meta: dict[str, Any], *, activate: bool) -> str:
    """A version with hand-written metadata (listing and coherence read no pipeline)."""
    with registry.staging() as staged:
        return registry.publish(staged, meta, activate=activate, reason="t", actor="t").version


@pytest.fixture
def day_registry(cli_settings: Settings) -> ModelRegistry:
    """v0001 month (active), v0002 day with a coherence check (active), v0003 day candidate."""
    registry = ModelRegistry(cli_settings.warehouse_path / "models")
    _publish(registry, {"granularity": "month", "rows_read": 1200}, activate=True)
    _publish(registry, {"granularity": "day", "coherence": COHERENCE}, activate=True)
    _publish(registry, {"granularity": "day"}, activate=False)
    return registry


def _row(table: str, version: str) -> str:
    return next(line for line in table.splitlines() if f" {version} " in line)


def test_models_show_the_granularity_and_the_active_version_of_each(
    day_registry: ModelRegistry,
) -> None:
    table = invoke("models", "--wide")
    listed = invoke("models", "--json")
    assert table.exit_code == 0 and listed.exit_code == 0, table.output + listed.output
    assert "* month" in _row(table.stdout, "v0001") and "1,200" in _row(table.stdout, "v0001")
    assert " day " in _row(table.stdout, "v0002") and "* day" in _row(table.stdout, "v0002")
    assert " day " in _row(table.stdout, "v0003") and "*" not in _row(table.stdout, "v0003")
    assert "active: month v0001, day v0002" in table.stdout
    assert [(m["version"], m["granularity"], m["active"]) for m in json.loads(listed.stdout)] == [
        ("v0001", "month", True),
        ("v0002", "day", True),
        ("v0003", "day", False),
    ]


def test_activating_a_day_version_moves_only_the_day_pointer(
    day_registry: ModelRegistry,
) -> None:
    result = invoke("models", "activate", "v0003")
    assert result.exit_code == 0, result.output
    assert "v0003 is now the active day model" in result.stdout
    assert (day_registry.active_name("month"), day_registry.active_name("day")) == (
        "v0001",
        "v0003",
    )
    assert "active: month v0001, day v0003" in invoke("models").stdout


def test_models_coherence_as_json_and_as_a_table(day_registry: ModelRegistry) -> None:
    as_json = invoke("models", "coherence", "--json")
    by_name = invoke("models", "coherence", "v0002", "--json")
    table = invoke("models", "coherence", "active")
    assert as_json.exit_code == 0 and table.exit_code == 0, as_json.output + table.output
    assert json.loads(as_json.stdout) == {"model_version": "v0002", **COHERENCE}
    assert json.loads(by_name.stdout) == json.loads(as_json.stdout)
    assert "day model v0002 vs month model v0001, months 2024-03" in table.stdout
    assert "total ratio 0.980" in table.stdout and "max 1.062" in table.stdout
    row = next(line for line in table.stdout.splitlines() if " p2 " in line)
    assert all(cell in row for cell in ("s1", "2024-03", "106.2", "100.0", "1.062", "6.2")), row


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("v0001", "v0001 is a month model"),
        ("v0003", "day model v0003 has no coherence check"),
        ("v0009", "no model version v0009"),
    ],
)
def test_models_coherence_says_why_a_version_has_none(
    day_registry: ModelRegistry, version: str, message: str
) -> None:
    result = invoke("models", "coherence", version)
    assert result.exit_code != 0
    assert message in str(result.exception)


def test_train_output_shows_granularity_filled_days_coherence_and_the_day_version(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def result(version: str, granularity: str, **extra: Any) -> TrainResult:
        return TrainResult(
            version=version,
            metrics={"model": {"wape": 0.2}, "baseline": {"wape": 0.4}, "holdout_rows": 7},
            rows_read=5000,
            rows_rejected=3,
            rejects_by_reason={},
            rejects_url=None,
            rows_aggregated=100,
            date_range=None,
            inputs=[],
            duration_s=4.0,
            promoted=True,
            promotion={"reason": "forced"},
            granularity=granularity,
            **extra,
        )

    day = result("v0006", "day", filled_cells=1234, coherence=COHERENCE["summary"])
    both = result("v0005", "month", also=[day.to_dict()])
    monkeypatch.setenv("COLUMNS", "200")  # whole lines to assert on (rich reads it per print)
    print_train(both.to_dict())
    out = capsys.readouterr().out
    assert "month model v0005 trained on 5,000 rows (3 rejected)" in out
    assert "7 store/product/months" in out and "7 store/product/days" in out
    assert "v0005 is the active month model: forced" in out
    assert "day model v0006 trained on the same rows" in out
    assert "1,234 store/product/days without sales filled with 0" in out
    assert "coherence with the month model: total ratio 0.980" in out
    assert "salesflow models coherence v0006" in out
    assert "v0006 is the active day model: forced" in out
    assert out.count("coherence with") == 1  # the month model has no check of its own


@pytest.mark.slow
def test_train_both_then_models_coherence_and_date_forecasts_from_a_job_server(
    spark: SparkSession, cli_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One real `train --granularity both` (1-3 min on 2 busy cores), then the commands that read
    its models: `models coherence`, and `forecast --date` with and without a day model active."""
    from salesflow.sales.catalog import synthetic_catalog

    source = tmp_path / "sales.csv"
    catalog = synthetic_catalog(n_stores=2, n_products=2, seed=3)
    generate_sales(
        source, rows=3000, seed=1, start=dt.date(2023, 1, 1), end=dt.date(2024, 2, 29),
        catalog=catalog,
    )  # fmt: skip
    # The checks are wiring, not skill: few trees, no gate, one backtest window that is also the
    # holdout (so no extra fit), each Spark job saved costing seconds on a busy machine.
    for name, value in {
        "NUM_TREES": "8",
        "PROMOTION_GATE": "false",
        "BACKTEST_WINDOWS": "1",
        "BACKTEST_HORIZON": "3",
        "HOLDOUT_MONTHS": "3",
    }.items():
        monkeypatch.setenv(f"SALESFLOW_{name}", value)
    get_settings.cache_clear()
    trained = invoke("train", str(source), "--granularity", "both", "--json")
    assert trained.exit_code == 0, trained.output
    result = json.loads(trained.stdout)
    day = result["also"][0]
    assert (result["granularity"], day["granularity"]) == ("month", "day")
    assert day["filled_cells"] > 0 and day["coherence"]["rows"] > 0
    assert result["metrics"]["model"]["wape"] is not None  # the one window is the holdout
    assert result["coherence"] is None and result["filled_cells"] is None

    report = json.loads(invoke("models", "coherence", "--json").stdout)
    assert report["model_version"] == day["version"]
    assert report["month_version"] == result["version"]
    assert report["summary"] == day["coherence"]

    store, product = (catalog.stores[0].id, catalog.products[0].id)
    ask = ("forecast", "--store", store, "--product", product, "--date", "2024-03-05")
    with serving(
        create_job_server(cli_settings, engine=FakeSpark().engine()), cli_settings.jobs_port
    ):
        by_day = invoke(*ask)
    assert by_day.exit_code == 0, by_day.output
    assert "2024-03-05 (day)" in by_day.stdout and f"day model {day['version']}" in by_day.stdout

    # The same question where only the month model is active: its month's forecast, and a note.
    other = tmp_path / "month-only"
    monkeypatch.setenv("SALESFLOW_DATA_DIR", str(other))
    monkeypatch.setenv("SALESFLOW_WAREHOUSE_URL", (other / "warehouse").as_uri())
    get_settings.cache_clear()
    month_only = get_settings()
    registry = ModelRegistry(month_only.warehouse_path / "models")
    registry.root.mkdir(parents=True)
    shutil.copytree(
        cli_settings.warehouse_path / "models" / result["version"], registry.root / "v0001"
    )
    registry.activate("v0001", reason="test", actor="test")
    with serving(create_job_server(month_only, engine=FakeSpark().engine()), month_only.jobs_port):
        by_month = invoke(*ask)
        as_json = json.loads(invoke(*ask, "--json").stdout)
    assert by_month.exit_code == 0, by_month.output
    assert "2024-03 (month)" in by_month.stdout and "month model v0001" in by_month.stdout
    assert "no day model is active" in by_month.stderr
    assert as_json["granularity"] == "month"
    assert any("no day model is active" in note for note in as_json["notes"])


def test_jobs_show_the_granularity_and_the_day_version_of_a_both_run(
    cli_settings: Settings,
) -> None:
    db = JobDB(cli_settings.data_dir / "jobs.db")
    job, _ = db.create_train("a" * 32, "file:///sales.csv", None)
    assert db.claim_next() is not None
    day = {"version": "v0002", "granularity": "day", "filled_cells": 9, "coherence": {"rows": 1}}
    result = {"granularity": "month", "also": [day], "promoted": True}
    db.succeed(job.job_id, model_version="v0001", result=result, log_tail=[])
    db.close()
    with serving(
        create_job_server(cli_settings, engine=FakeSpark().engine()), cli_settings.jobs_port
    ):
        table = invoke("jobs", "--wide")
        listed = invoke("jobs", "--json")
    assert table.exit_code == 0 and listed.exit_code == 0, table.output + listed.output
    row = next(line for line in table.stdout.splitlines() if job.job_id[:12] in line)
    assert " month " in row and "v0001, day v0002" in row, row
    (record,) = json.loads(listed.stdout)
    assert (record["granularity"], record["also"]) == ("month", [day])
