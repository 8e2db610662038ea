"""The job server's model routes with a month and a day model active side by side (no Spark)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from salesflow.auth import auth_headers
from salesflow.config import Settings
from salesflow.registry import ModelRegistry
from salesflow.services.jobs.app import create_app
from tests.unit.test_jobs_api import FakeSpark

COHERENCE: dict[str, Any] = {
    "month_version": "v0001",
    "months": ["2024-03"],
    "summary": {"rows": 1, "total_ratio": 0.98},
    "rows": [{"store_id": "s1", "product_id": "p1", "month": "2024-03", "ratio": 0.98}],
}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    registry = ModelRegistry(settings.warehouse_path / "models")
    for meta in ({"granularity": "month"}, {"granularity": "day", "coherence": COHERENCE}):
        with registry.staging() as staged:
            registry.publish(staged, meta, activate=True, reason="t", actor="t")
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
