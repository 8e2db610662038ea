"""The job server's model routes with a month and a day model active side by side (no Spark): what
/models shows of each version, the activation history, the coherence check."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from salesflow.auth import auth_headers
from salesflow.config import Settings
from salesflow.registry import ModelRegistry
from salesflow.services.jobs import models
from salesflow.services.jobs.app import create_app
from tests.unit.test_jobs_api import FakeSpark

COHERENCE: dict[str, Any] = {
    "month_version": "v0001",
    "months": ["2024-03"],
    "summary": {"rows": 1, "total_ratio": 0.98},
    "rows": [{"store_id": "s1", "product_id": "p1", "month": "2024-03", "ratio": 0.98}],
}


DETAILS: dict[str, Any] = {
    "granularity": "month",
    "backtest": {
        "windows": [{"origin": "2021-09", "months": ["2021-10"], "model": {"wape": 0.2}}],
        "overall": {"model": {"wape": 0.2}, "seasonal_naive": {"wape": 0.4}},
        "skill": 0.5,
        "per_series": [{"store_id": "1", "product_id": "1"}] * 50,
        "per_series_note": "every series",
    },
    "intervals": {"levels": {"0.8": {"half_width": 3.0}}},
    "feature_importances": {"month": 0.7, "store": 0.3},
    "promotion": {"promoted": True, "reason": "beats the active model"},
    "training_sources": ["a" * 64],
}


def publish(registry: ModelRegistry, meta: dict[str, Any], reason: str = "t") -> str:
    with registry.staging() as staged:
        return registry.publish(staged, meta, activate=True, reason=reason, actor="t").version


@pytest.fixture
def registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry(settings.warehouse_path / "models")


@pytest.fixture
def client(settings: Settings, registry: ModelRegistry) -> Iterator[TestClient]:
    for meta in ({"granularity": "month"}, {"granularity": "day", "coherence": COHERENCE}):
        publish(registry, meta)
    app = create_app(settings, engine=FakeSpark().engine())
    with TestClient(app, headers=auth_headers(settings)) as test_client:
        yield test_client


def test_models_show_granularity_and_one_active_model_per_granularity(client: TestClient) -> None:
    body = client.get("/models").json()
    assert body["active"] == "v0001"
    assert body["active_by_granularity"] == {"month": "v0001", "day": "v0002"}
    assert [(m["version"], m["granularity"], m["active"]) for m in body["models"]] == [
        ("v0002", "day", True),
        ("v0001", "month", True),
    ]


def test_coherence_of_the_active_day_model(client: TestClient) -> None:
    answer = client.get("/models/active/coherence")
    assert answer.status_code == 200
    assert answer.json() == {"model_version": "v0002", **COHERENCE}
    assert client.get("/models/v0002/coherence").json()["summary"]["total_ratio"] == 0.98
    month = client.get("/models/v0001/coherence")
    assert month.status_code == 400 and "month model" in month.text
    assert client.get("/models/v0009/coherence").status_code == 404


def test_models_carry_the_details_the_dashboard_shows(
    client: TestClient, registry: ModelRegistry
) -> None:
    publish(registry, DETAILS, reason="a better backtest")
    body = client.get("/models").json()
    newest, day, oldest = body["models"]
    assert newest["version"] == "v0003" and newest["active"] is True
    assert newest["backtest"] == {
        "windows": DETAILS["backtest"]["windows"],
        "overall": DETAILS["backtest"]["overall"],
        "skill": 0.5,
        "series": 50,  # counted from the rows left out
    }
    for key in ("intervals", "feature_importances", "promotion", "training_sources"):
        assert newest[key] == DETAILS[key], key
    assert oldest["backtest"] is None and oldest["feature_importances"] is None
    assert "coherence" not in day  # the coherence rows have their own route
    assert [(h["version"], h["previous"], h["reason"]) for h in body["history"]] == [
        ("v0001", None, "t"),
        ("v0002", None, "t"),
        ("v0003", "v0001", "a better backtest"),
    ]


def test_a_listing_keeps_the_last_activations_only(
    client: TestClient, registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "HISTORY_LIMIT", 2)
    client.post("/models/v0001/activate", json={"reason": "rollback"})
    history = client.get("/models").json()["history"]
    assert [(h["version"], h["reason"]) for h in history] == [("v0002", "t"), ("v0001", "rollback")]
