"""The CLI in an 80-column terminal: compact tables by default (`--wide` for every column and
whole ids), id prefixes taken back, the upload preview in plain output, the services' error codes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from salesflow import cli
from salesflow.cli import demo, system
from salesflow.cli.ids import unique_id
from salesflow.clients.upload import UploadClient
from salesflow.config import Settings
from salesflow.errors import InputError
from salesflow.registry import ModelRegistry
from salesflow.services.dashboard.app import create_app as create_dashboard
from salesflow.services.jobs.app import create_app as create_job_server
from salesflow.services.jobs.db import JobDB
from tests.fixtures.servers import serving
from tests.unit.test_cli import day_registry, upload_service  # noqa: F401  (a fixture)
from tests.unit.test_jobs_api import FakeSpark

HEADER = "product_id,product_name,product_price,store_id,store_name,quantity,date\n"
GOOD = "p1,Radiator,2000,s1,Giant,3,2021-01-05\n"
#: Line 3 and 5 of the file: a DD/MM/YYYY date and a decimal comma in the quantity.
SALES = (
    HEADER
    + GOOD
    + "p1,Radiator,2000,s1,Giant,3,05/01/2021\n"
    + GOOD
    + '2,Lamp,5,s2,MG,"1,5",2021-02-01\n'
)


def narrow(*args: str) -> Result:
    return CliRunner().invoke(cli.app, list(args), env={"COLUMNS": "80"})


def fits(result: Result) -> None:
    assert result.exit_code == 0, result.output
    too_wide = [line for line in result.stdout.splitlines() if len(line) > 80]
    assert not too_wide, too_wide


def test_upload_prints_its_preview_and_the_tables_fit_80_columns(
    cli_settings: Settings, tmp_path: Path
) -> None:
    source = tmp_path / "sales.csv"
    source.write_text(SALES)
    with upload_service(cli_settings):
        uploaded = narrow("upload", str(source), "--no-wait")
        with UploadClient(cli_settings) as client:
            (record,) = client.list()
        table = narrow("uploads")
        wide = CliRunner().invoke(cli.app, ["uploads", "--wide"], env={"COLUMNS": "250"})
    fits(uploaded)
    assert "preview: 4 rows, 2021-01-05 to 2021-02-01, 2 stores, 2 products" in uploaded.stdout
    assert "rejected rows: 2" in uploaded.stdout
    assert "bad_date: 1 (first lines 3)" in uploaded.stdout
    assert "bad_quantity: 1 (first lines 5)" in uploaded.stdout
    fits(table)
    upload_id = record["upload_id"]
    assert upload_id[:8] in table.stdout and upload_id not in table.stdout
    assert upload_id in wide.stdout and f"{len(SALES):,}" in wide.stdout


def test_jobs_fit_80_columns_and_take_an_upload_id_prefix(cli_settings: Settings) -> None:
    db = JobDB(cli_settings.data_dir / "jobs.db")
    ids = ["ab" * 16, "cd" * 16]
    for upload_id in ids:
        db.create_train(upload_id, f"file:///{upload_id}.csv", None)
    db.close()
    with serving(
        create_job_server(cli_settings, engine=FakeSpark().engine(), report=lambda *_: None),
        cli_settings.jobs_port,
    ):
        table = narrow("jobs")
        # a whole id is used as typed (a prefix is looked up at the upload service)
        one = narrow("jobs", "--upload", ids[1], "--json")
    fits(table)
    assert "abababab" in table.stdout and "ab" * 16 not in table.stdout
    assert [j["upload_id"] for j in json.loads(one.stdout)] == [ids[1]]


def test_models_fit_80_columns_and_name_holdout_and_backtest(
    day_registry: ModelRegistry,  # noqa: F811
) -> None:
    table = narrow("models")
    fits(table)
    assert "holdout" in table.stdout and "backtest" in table.stdout
    assert "v0003" in table.stdout


def test_an_unknown_prefix_and_an_ambiguous_one_are_refused(
    cli_settings: Settings, tmp_path: Path
) -> None:
    source = tmp_path / "sales.csv"
    with upload_service(cli_settings):
        for n in range(2):
            source.write_text(SALES + GOOD * (n + 1))
            assert narrow("upload", str(source), "--no-wait").exit_code == 0
        missing = narrow("retrain", "ffffffff", "--no-wait")
        short = narrow("retrain", "ab", "--no-wait")
    assert missing.exit_code != 0 and "no upload id starts with 'ffffffff'" in str(
        missing.exception
    )
    assert short.exit_code != 0 and "too short" in str(short.exception)


def test_the_cli_shows_the_services_error_code(cli_settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "empty.csv"
    source.write_text(HEADER)
    with upload_service(cli_settings):
        refused = narrow("upload", str(source), "--no-wait")
    assert refused.exit_code != 0
    assert getattr(refused.exception, "code", None) == "no_rows", refused.exception


def test_a_unique_prefix_names_its_id_and_a_shared_one_is_refused() -> None:
    ids = ["abcd1234" + "0" * 24, "abcd5678" + "0" * 24, "ef" * 16]
    assert unique_id("abcd1", ids, "upload") == ids[0]
    assert unique_id("efef", ids, "upload") == ids[2]
    with pytest.raises(InputError, match="starts 2 upload ids"):
        unique_id("abcd", ids, "upload")


def test_the_demo_ends_by_saying_what_to_do_next(
    cli_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [{"store_id": "s1", "product_id": "p1", "period": "2022-04", "predicted_quantity": 3}]
    record = {"model_version": "v0001"}
    monkeypatch.setattr(demo, "run_demo", lambda *_, **__: (rows, record))
    result = narrow("demo")
    assert result.exit_code == 0, result.output
    assert "Next: `make up` (or `salesflow up`)" in result.stdout
    assert "`salesflow login` prints a new one" in result.stdout
    assert "token" not in result.stdout


def test_login_prints_a_link_that_works_once_and_holds_no_token(cli_settings: Settings) -> None:
    with serving(create_dashboard(cli_settings), cli_settings.dashboard_port):
        result = narrow("login")
        assert result.exit_code == 0, result.output
        link = result.stdout.split("Dashboard: ", 1)[1].split()[0]
        first = httpx.get(link, follow_redirects=False)
        again = httpx.get(link, follow_redirects=False)
    token = cli_settings.auth_token.get_secret_value() if cli_settings.auth_token else "?"
    assert token not in result.stdout and "/login?code=" in link
    assert first.status_code == 303 and "salesflow_session=" in first.headers["set-cookie"]
    assert again.status_code == 401  # one browser, once


def test_login_says_when_the_dashboard_is_not_running(cli_settings: Settings) -> None:
    result = narrow("login")
    assert result.exit_code != 0
    assert "is not answering: start it with `salesflow up`" in str(result.exception)


def test_up_without_a_dashboard_warns_instead_of_failing(
    cli_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    system._print_login(cli_settings)  # what `salesflow up` and the kept-up demo call
    assert "no dashboard login link" in capsys.readouterr().err
