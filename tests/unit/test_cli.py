"""The CLI for people and scripts: `status` with nothing running, `uploads` from a real upload
service, `--json` equal to the table's data, progress on stderr only."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from pydantic import SecretStr
from typer.testing import CliRunner, Result

from salesflow import cli
from salesflow.cli import output as cli_output
from salesflow.cli.model import TRAIN_STAGES
from salesflow.cli.output import StageProgress
from salesflow.config import Settings, get_settings
from salesflow.generate import generate_sales
from salesflow.registry import ModelRegistry
from salesflow.services.upload.app import create_app
from salesflow.services.upload.client import UploadClient
from salesflow.status import system_status
from tests.conftest import free_port

#: Wide enough that no table cell wraps (assertions look for whole values on one line).
WIDE = {"COLUMNS": "220"}
#: `status` must answer within this long when everything is down (probes wait at most 3 s).
STATUS_BUDGET_S = 8.0


@pytest.fixture
def cli_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings on free ports where nothing listens, exported for the CLI's get_settings()."""
    settings = Settings(
        data_dir=tmp_path / "data",
        upload_port=free_port(),
        jobs_port=free_port(),
        dashboard_port=free_port(),
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        auth_token=SecretStr("cli-test-token-" + "x" * 20),
        _env_file=None,
    )
    monkeypatch.chdir(tmp_path)  # no stray .env file
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield settings
    get_settings.cache_clear()


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli.app, list(args), env={**WIDE, **(env or {})})


def test_status_with_nothing_running_says_each_part_is_down(cli_settings: Settings) -> None:
    started = time.monotonic()
    result = invoke("status")
    elapsed = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert elapsed < STATUS_BUDGET_S, f"status took {elapsed:.1f} s with everything down"
    lines = result.stdout.splitlines()
    for part in ("dashboard (optional)", "upload service", "job server", "broker"):
        row = next(line for line in lines if f" {part} " in line)
        assert " no " in row and "unreachable" in row, row
    consumer = next(line for line in lines if " upload consumer " in line)
    assert "unknown" in consumer and "lag unknown" in consumer
    assert cli_settings.upload_service_url in result.stdout
    assert "down: upload service, job server, broker" in result.stdout
    assert "active model: none" in result.stdout


def test_status_json_names_the_required_parts_that_are_down(cli_settings: Settings) -> None:
    result = invoke("status", "--json")
    assert result.exit_code == 1
    answer = json.loads(result.stdout)
    assert answer["ok"] is False
    assert answer["down"] == ["upload service", "job server", "broker"]
    assert {s["name"]: s["status"] for s in answer["services"]} == {
        "dashboard": "unreachable",
        "upload service": "unreachable",
        "job server": "unreachable",
    }
    assert answer["broker"] == {
        "bootstrap": cli_settings.kafka_bootstrap_servers,
        "reachable": False,
    }
    assert answer["consumer"]["running"] is None and answer["consumer"]["lag"] is None
    assert answer["active_model"] is None


def test_status_reads_the_active_model_from_the_registry_when_the_job_server_is_down(
    cli_settings: Settings,
) -> None:
    registry = ModelRegistry(cli_settings.warehouse_path / "models")
    with registry.staging() as staged:
        (staged / "pipeline").mkdir()
        meta = {"created_at": "2026-11-27T10:00:00+00:00", "backtest": {"skill": 0.125}}
        registry.publish(staged, meta, reason="test", actor="t", activate=True)
    model = system_status(cli_settings)["active_model"]
    assert model is not None
    assert (model["version"], model["source"]) == ("v0001", "registry")
    assert model["backtest"]["skill"] == 0.125


@contextlib.contextmanager
def upload_service(settings: Settings) -> Iterator[None]:
    """The real upload service on settings.upload_port, in a thread."""
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=settings.upload_port,
            log_config=None,
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15  # it binds in well under a second
    while not server.started:
        assert time.monotonic() < deadline, "the upload service did not start"
        time.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(30)


def test_uploads_lists_the_upload_services_records_as_table_and_json(
    cli_settings: Settings, tmp_path: Path
) -> None:
    source = tmp_path / "sales.csv"
    generate_sales(source, rows=200, seed=3)
    with upload_service(cli_settings):
        with UploadClient(cli_settings) as client:
            stored = client.upload(source)
        table = invoke("uploads")
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
