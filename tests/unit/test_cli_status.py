"""`salesflow status` and the status it gathers: every part down, a job server that does not answer
(the active model is unknown, whatever lies on disk), and the active models as the job server's
/models shows them."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import httpx
from typer.testing import CliRunner, Result

from salesflow import cli
from salesflow.clients.status import active_models, http_getter, system_status
from salesflow.config import Settings
from salesflow.registry import ModelRegistry
from salesflow.services.jobs.app import create_app as create_job_server
from tests.fixtures.servers import serving
from tests.unit.test_jobs_api import FakeSpark

#: Wide enough that no table cell wraps (assertions look for whole values on one line).
WIDE = {"COLUMNS": "220"}
#: `status` must answer within this long when everything is down (probes wait at most 3 s).
STATUS_BUDGET_S = 8.0


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.app, list(args), env=WIDE)


def publish_month_and_day(settings: Settings) -> None:
    """v0001 month model with a backtest (active), v0002 day model (active)."""
    registry = ModelRegistry(settings.warehouse_path / "models")
    with registry.staging() as staged:
        meta = {"created_at": "2026-11-27T10:00:00+00:00", "backtest": {"skill": 0.125}}
        registry.publish(staged, meta, reason="test", actor="t", activate=True)
    with registry.staging() as staged:
        meta = {"created_at": "2026-11-27T10:01:00+00:00", "granularity": "day"}
        registry.publish(staged, meta, reason="test", actor="t", activate=True)


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
    assert "active model: unknown (the job server did not answer)" in result.stdout


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
    assert answer["models_error"] == "the job server did not answer"


def test_a_silent_job_server_leaves_the_model_unknown_even_with_a_registry_on_disk(
    cli_settings: Settings,
) -> None:
    publish_month_and_day(cli_settings)
    answer = system_status(cli_settings)
    assert answer["active_model"] is None and answer["active_day_model"] is None
    assert answer["models_error"] == "the job server did not answer"
    assert "active model: unknown" in invoke("status").stdout


def test_status_shows_the_job_servers_active_models(cli_settings: Settings) -> None:
    publish_month_and_day(cli_settings)
    app = create_job_server(cli_settings, engine=FakeSpark().engine(), report=lambda *_: None)
    with serving(app, cli_settings.jobs_port):
        answer = system_status(cli_settings)
        table = invoke("status").stdout
    model, day = answer["active_model"], answer["active_day_model"]
    assert answer["models_error"] is None
    assert (model["version"], model["granularity"], model["backtest"]) == (
        "v0001",
        "month",
        {"skill": 0.125},
    )
    assert (day["version"], day["granularity"]) == ("v0002", "day")
    assert "active model: v0001" in table and "skill 0.125" in table
    assert "active day model: v0002" in table


def _models_answer(status: int, body: Any) -> dict[str, Any]:
    def reply(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/models"
        return httpx.Response(status, json=body)

    async def ask() -> dict[str, Any]:
        transport = httpx.MockTransport(reply)
        async with httpx.AsyncClient(base_url="http://jobs", transport=transport) as client:
            return await active_models(http_getter(client))

    return anyio.run(ask)


def test_active_models_pick_each_granularitys_active_version() -> None:
    listing = {
        "active": "v0003",
        "active_by_granularity": {"month": "v0003", "day": None},
        "models": [{"version": "v0004"}, {"version": "v0003", "metrics": {"wape": 0.2}}],
    }
    assert _models_answer(200, listing) == {
        "active_model": {"version": "v0003", "metrics": {"wape": 0.2}},
        "active_day_model": None,
        "models_error": None,
    }


def test_a_refusing_job_server_leaves_the_models_unknown() -> None:
    found = _models_answer(503, {"error": {"code": "unavailable"}})
    assert found == {
        "active_model": None,
        "active_day_model": None,
        "models_error": "the job server answered /models with HTTP 503",
    }
