"""The job server's per-series accuracy of a version: its backtest's per-store/product scores,
worst WAPE first, with the skill over the seasonal-naive forecast."""

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


def _series(store: str, wape: float | None, seasonal: float | None, mase: float | None) -> Any:
    return {
        "store_id": store,
        "product_id": "p1",
        "model": {"rmse": 2.0, "mae": 1.0, "wape": wape, "mase": mase},
        "naive": {"rmse": 3.0, "mae": 2.0, "wape": 0.5, "mase": 1.2},
        "seasonal_naive": {"rmse": 3.0, "mae": 2.0, "wape": seasonal, "mase": 1.0},
        "rows": 6,
    }


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, engine=FakeSpark().engine(), report=lambda *_: None)
    with TestClient(app, headers=auth_headers(settings)) as test_client:
        yield test_client


def test_per_series_scores_worst_first_with_skill(client: TestClient, settings: Settings) -> None:
    assert client.get("/models/active/accuracy").status_code == 404
    registry = ModelRegistry(settings.warehouse_path / "models")
    backtest = {
        "series": 40,
        "per_series_note": "the 3 series with the most sales of 40",
        "per_series": [
            _series("s1", 0.1, 0.2, 0.5),
            _series("s2", None, 0.3, None),
            _series("s3", 0.4, 0.0, 1.5),
        ],
    }
    with registry.staging() as staged:
        registry.publish(staged, {"backtest": backtest}, activate=True, reason="t", actor="t")
    answer = client.get("/models/active/accuracy").json()
    assert answer["model_version"] == "v0001" and answer["series"] == 40
    assert answer["note"].startswith("the 3 series")
    rows = answer["per_series"]
    assert [r["store_id"] for r in rows] == ["s3", "s1", "s2"]  # worst first, no WAPE last
    assert rows[1] == {
        "store_id": "s1",
        "product_id": "p1",
        "wape": 0.1,
        "mase": 0.5,
        "rmse": 2.0,
        "seasonal_naive_wape": 0.2,
        "skill": 0.5,
        "rows": 6,
    }
    assert rows[0]["skill"] is None  # a seasonal-naive WAPE of 0 gives no skill
    assert client.get("/models/v0001/accuracy").json() == answer
    assert client.get("/models/v0009/accuracy").status_code == 404


def test_a_version_without_a_backtest_has_no_rows(client: TestClient, settings: Settings) -> None:
    registry = ModelRegistry(settings.warehouse_path / "models")
    with registry.staging() as staged:
        registry.publish(staged, {}, activate=True, reason="t", actor="t")
    answer = client.get("/models/v0001/accuracy").json()
    assert answer["per_series"] == [] and answer["series"] is None
