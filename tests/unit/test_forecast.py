"""The forecast service: queries, the fallback chain, intervals, lineage and hot reload.

The models are salesflow's pipeline fitted (few trees) on a tiny seeded history with the
session's Spark, published with metadata written as the training contract describes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import SparkSession

from salesflow.config import Settings
from salesflow.errors import InputError, ModelNotFoundError, TooLargeError
from salesflow.registry import ModelRegistry, ModelVersion
from salesflow.serving.forest import Forecaster
from salesflow.serving.model import Fallback, ModelFacts, output_columns
from salesflow.serving.service import MAX_QUERIES, ForecastService, Query, parse_period
from tests.fixtures.forecast_models import (
    ZERO_PAIR,
    Row,
    contract_metadata,
    fallback_of,
    fit_pipeline,
    legacy_metadata,
    monthly_rows,
    publish,
    write_curated,
)

#: Interval half widths written into the test model's metadata (0.95 wide enough to clip).
WIDTHS = {"0.8": 2.5, "0.95": 40.0}
LEGACY_SHA = "b" * 64


@dataclass(frozen=True)
class Served:
    registry: ModelRegistry
    history: Path
    rows: list[Row]
    current: ModelVersion  # contract metadata, active
    legacy: ModelVersion  # no intervals, no fallback, no backtest


@pytest.fixture(scope="module")
def served(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Served:
    tmp = tmp_path_factory.mktemp("forecast")
    settings = Settings(data_dir=tmp / "data", num_trees=5, max_depth=5, _env_file=None)
    rows = monthly_rows()
    pipeline = fit_pipeline(spark, settings, rows, tmp / "pipeline")
    registry = ModelRegistry(tmp / "models")
    current = publish(registry, pipeline, contract_metadata(rows, WIDTHS), activate=True)
    legacy = publish(registry, pipeline, legacy_metadata(LEGACY_SHA), activate=False)
    return Served(registry, tmp / "curated", rows, current, legacy)


def _one(service: ForecastService, store: str, product: str, period: str = "2023-03") -> dict:
    batch = service.forecast([Query(store, product, period)])
    assert len(batch.answers) == 1
    return batch.answers[0].to_dict()


# --- queries (no model) ------------------------------------------------------------------------


def test_periods_are_months_and_dates_mean_their_month() -> None:
    assert parse_period("2023-03") == (2023, 3)
    assert parse_period("2023-03-31") == (2023, 3)
    assert Query.of(" s1 ", "p1", date="2024-02-29") == Query("s1", "p1", "2024-02-29")
    for bad in ("2023-13", "2023-3", "2023-02-30", "March", ""):
        with pytest.raises(InputError, match="not a month YYYY-MM or a date"):
            parse_period(bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"store_id": "s1", "product_id": "p1"}, "exactly one of month"),
        (
            {"store_id": "s1", "product_id": "p1", "month": "2023-01", "date": "2023-01-02"},
            "exactly one",
        ),
        ({"store_id": " ", "product_id": "p1", "month": "2023-01"}, "store_id is missing"),
        ({"store_id": "s1", "product_id": "x" * 201, "month": "2023-01"}, "not an id"),
        ({"store_id": "s1", "product_id": "p1", "date": "2023-01"}, "is not YYYY-MM-DD"),
    ],
)
def test_bad_queries_say_what_is_wrong(kwargs: dict, message: str) -> None:
    store, product = kwargs.pop("store_id"), kwargs.pop("product_id")
    with pytest.raises(InputError, match=message):
        Query.of(store, product, **kwargs)


def test_output_columns_carry_intervals_basis_and_lineage() -> None:
    columns = output_columns(["0.8", "0.95"])
    assert columns[5:10] == ["predicted_quantity", "lo_80", "hi_80", "lo_95", "hi_95"]
    assert columns[-2:] == ["model_version", "trained_at"]
    assert "model_version" not in output_columns(["0.9"], lineage=False)
    assert "lo_90" in output_columns(["0.9"])


def test_fallback_means_from_the_curated_history(tmp_path: Path) -> None:
    rows = monthly_rows()
    write_curated(tmp_path, "c" * 64, rows[:100])
    write_curated(tmp_path, "d" * 64, rows[100:])
    found = Fallback.from_history(tmp_path, ["c" * 64, "d" * 64])
    expected = fallback_of(rows)
    assert found is not None
    assert found.global_mean == pytest.approx(expected["global_mean"], rel=1e-12)
    assert found.product_mean == pytest.approx(expected["product_mean"], rel=1e-12)
    assert found.store_mean == pytest.approx(expected["store_mean"], rel=1e-12)
    # A partition that is gone (or a source that is not a checksum) means no guess at all.
    assert Fallback.from_history(tmp_path, ["c" * 64, "e" * 64]) is None
    assert Fallback.from_history(tmp_path, ["../c"]) is None


def test_malformed_metadata_blocks_are_ignored_with_notes(tmp_path: Path) -> None:
    meta = {
        "intervals": {"levels": {"0.8": {"half_width": -1}}},
        "fallback": {"global_mean": "many", "product_mean": {}, "store_mean": {}},
        "created_at": "2024-01-01T00:00:00Z",
    }
    facts = ModelFacts.of(ModelVersion("v0007", tmp_path, meta, False))
    assert facts.half_widths == {} and facts.fallback is None
    assert facts.levels == ("0.8", "0.95")
    assert any("no prediction intervals" in n for n in facts.notes)
    assert any("no fallback means" in n for n in facts.notes)
    assert facts.lineage["model_version"] == "v0007"
    assert facts.lineage["metrics"] == {"holdout": None, "backtest": None, "skill": None}


# --- answers from a model ----------------------------------------------------------------------


@pytest.mark.slow
def test_known_ids_are_answered_by_the_model_with_intervals_and_lineage(served: Served) -> None:
    service = ForecastService(served.registry)
    batch = service.forecast([Query("s2", "p1", "2023-03"), Query("s1", "p3", "2023-07-15")])
    forecaster = Forecaster.load(served.current.pipeline_path)
    expected = forecaster.predict(
        {"store_id": ["s2", "s1"], "product_id": ["p1", "p3"], "year": [2023] * 2, "month": [3, 7]}
    )
    assert [a.predicted_quantity for a in batch.answers] == np.maximum(expected, 0).tolist()
    for answer in batch.answers:
        p = answer.predicted_quantity
        assert answer.basis == "model" and not (answer.unknown_store or answer.unknown_product)
        assert set(answer.intervals) == {"0.8", "0.95"}
        for level, (lo, hi) in answer.intervals.items():
            assert lo is not None and hi is not None and lo <= p <= hi
            assert hi - p == pytest.approx(WIDTHS[level])
    assert batch.answers[1].period == "2023-07" and batch.granularity == "month"
    lineage = batch.lineage
    assert lineage["model_version"] == "v0001" == batch.model_version
    assert lineage["trained_at"] == served.current.metadata["created_at"]
    assert lineage["training_sources"] == ["a" * 64]
    assert lineage["date_range"] == {"first": "2021-01-01", "last": "2022-12-31"}
    assert lineage["metrics"]["holdout"]["model"]["wape"] == 0.06
    assert lineage["metrics"]["backtest"]["model"]["wape"] == 0.05
    assert lineage["metrics"]["skill"] == pytest.approx(0.5455)
    # The date is answered with its month (no day model is active), and the response says so.
    assert len(batch.notes) == 1 and "no day model is active" in batch.notes[0]


@pytest.mark.slow
def test_a_wide_interval_is_clipped_at_zero_and_says_so(served: Served) -> None:
    answer = _one(ForecastService(served.registry), *ZERO_PAIR)
    p = answer["predicted_quantity"]
    lo, hi = answer["intervals"]["0.95"]
    assert p < WIDTHS["0.95"] and lo == 0.0 and hi == p + WIDTHS["0.95"]
    assert answer["clipped"] is True and answer["basis"] == "model"
    # A narrow interval around a large answer is not clipped.
    assert _one(ForecastService(served.registry), "s3", "p2")["clipped"] is False


@pytest.mark.slow
def test_unseen_ids_fall_back_to_means_never_to_a_silent_model_guess(served: Served) -> None:
    service = ForecastService(served.registry)
    means = fallback_of(served.rows)
    new_store = _one(service, "s-new", "p2")
    assert new_store["basis"] == "product_mean" and new_store["unknown_store"] is True
    assert new_store["predicted_quantity"] == means["product_mean"]["p2"]
    new_product = _one(service, "s1", "p-new")
    assert new_product["basis"] == "store_mean" and new_product["unknown_product"] is True
    assert new_product["predicted_quantity"] == means["store_mean"]["s1"]
    both = _one(service, "s-new", "p-new")
    assert both["basis"] == "global_mean"
    assert both["predicted_quantity"] == means["global_mean"]
    for answer in (new_store, new_product, both):
        # flat means (this fixture's versions record no month profiles): no interval
        assert answer["intervals"] == {"0.8": [None, None], "0.95": [None, None]}
        assert answer["clipped"] is False
    batch = service.forecast([Query("s-new", "p-new", "2023-01")])
    assert any("mean of that calendar month" in note for note in batch.notes)


@pytest.mark.slow
def test_a_legacy_version_degrades_to_nulls_and_model_answers(served: Served) -> None:
    service = ForecastService(served.registry)  # no curated history to compute means from
    batch = service.forecast([Query("s-new", "p1", "2023-01")], version="v0002")
    answer = batch.answers[0]
    assert answer.basis == "model" and answer.unknown_store and not answer.unknown_product
    assert answer.intervals == {"0.8": [None, None], "0.95": [None, None]}
    assert any("no prediction intervals" in n for n in batch.notes)
    assert any("no fallback means" in n for n in batch.notes)
    assert batch.lineage["metrics"]["backtest"] is None
    assert batch.lineage["training_sources"] == [LEGACY_SHA]


@pytest.mark.slow
def test_a_legacy_version_gets_fallback_means_from_its_history(
    served: Served, tmp_path: Path
) -> None:
    write_curated(tmp_path, LEGACY_SHA, served.rows)
    service = ForecastService(served.registry, history_root=tmp_path)
    batch = service.forecast([Query("s-new", "p1", "2023-01")], version="2")
    assert batch.answers[0].basis == "product_mean"
    assert batch.answers[0].predicted_quantity == pytest.approx(
        fallback_of(served.rows)["product_mean"]["p1"], rel=1e-12
    )
    assert any("computed from its history" in n for n in batch.notes)


@pytest.mark.slow
def test_the_next_request_after_an_activation_uses_the_new_version(served: Served) -> None:
    registry = served.registry
    service = ForecastService(registry)
    try:
        assert service.forecast([Query("s1", "p1", "2023-01")]).model_version == "v0001"
        registry.activate("v0002", reason="test hot reload", actor="test")
        started = time.perf_counter()
        batch = service.forecast([Query("s1", "p1", "2023-01")])
        reload_s = time.perf_counter() - started
        assert batch.model_version == "v0002" and batch.lineage["model_version"] == "v0002"
        assert set(service.load_seconds) == {"v0001", "v0002"}
        print(
            f"hot reload: first request after activation {reload_s * 1000:.1f} ms "
            f"(load {service.load_seconds['v0002'] * 1000:.1f} ms)"
        )
        warm = time.perf_counter()
        service.forecast([Query("s1", "p1", "2023-01")])
        print(f"warm single query: {(time.perf_counter() - warm) * 1e6:.0f} us")
    finally:
        registry.activate("v0001", reason="test restores", actor="test")
    assert service.forecast([Query("s1", "p1", "2023-01")]).model_version == "v0001"


@pytest.mark.slow
def test_limits_and_missing_models(served: Served, tmp_path: Path) -> None:
    service = ForecastService(served.registry)
    with pytest.raises(TooLargeError, match=f"at most {MAX_QUERIES}"):
        service.forecast([Query("s1", "p1", "2023-01")] * (MAX_QUERIES + 1))
    with pytest.raises(ModelNotFoundError):
        service.forecast([Query("s1", "p1", "2023-01")], version="v0099")
    with pytest.raises(ModelNotFoundError, match="no active model"):
        ForecastService(ModelRegistry(tmp_path / "empty")).forecast([Query("s", "p", "2023-01")])
    batch = service.forecast([Query("s1", "p1", f"2023-{m:02d}") for m in range(1, 13)] * 800)
    assert len(batch.answers) == 9600 and {a.basis for a in batch.answers} == {"model"}
