"""The day path's pure pieces: daily aggregation, zero fill, day features, day windows, and the
registry's one active pointer per granularity."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import DataFrame, SparkSession

from salesflow.config import Settings
from salesflow.registry import ModelRegistry
from salesflow.sales.contract import REQUIRED_COLUMNS
from salesflow.spark.coherence import horizon_months
from salesflow.spark.pipeline import (
    DAY_FEATURES,
    FEATURES,
    HistoryShape,
    build_pipeline,
    pipeline_parameters,
)
from salesflow.spark.transforms import (
    DAY_KEYS,
    aggregate_daily,
    aggregate_with_rejects,
    clean,
    fill_missing_days,
    validate,
    with_day_features,
    with_day_index,
)
from salesflow.spark.windows import day_label, plan_windows
from tests.fixtures.data import assert_df_equal, sale

D = dt.date


def _clean(spark: SparkSession, rows: list[list[str]]) -> DataFrame:
    schema = ", ".join(f"{c} string" for c in REQUIRED_COLUMNS)
    return spark.createDataFrame(rows, schema).transform(validate).transform(clean)


def test_aggregate_daily_sums_per_store_product_date(spark: SparkSession) -> None:
    df = _clean(
        spark,
        [
            sale("1", "2021-01-01"),
            sale("2.5", "2021-01-01 13:00:00"),
            sale("4", "2021-01-03"),
            sale("8", "2021-02-01", store_id="s2"),
        ],
    )
    daily = df.transform(aggregate_daily)
    assert_df_equal(
        daily,
        [
            ("s1", "p1", D(2021, 1, 1), 3.5),
            ("s1", "p1", D(2021, 1, 3), 4.0),
            ("s2", "p1", D(2021, 2, 1), 8.0),
        ],
        [*DAY_KEYS, "quantity"],
    )


def test_aggregate_with_rejects_by_day(spark: SparkSession) -> None:
    df = _clean(spark, [sale("1", "2021-01-01"), sale("2", "2021-01-01"), sale("x")])
    assert_df_equal(
        df.transform(aggregate_with_rejects, DAY_KEYS),
        [
            (None, "s1", "p1", D(2021, 1, 1), 3.0, 2, D(2021, 1, 1), D(2021, 1, 1)),
            ("bad_quantity", None, None, None, None, 1, None, None),
        ],
        ["reject_reason", *DAY_KEYS, "quantity", "rows", "first_date", "last_date"],
    )


def test_fill_missing_days_fills_each_series_own_span_with_zeros(spark: SparkSession) -> None:
    daily = spark.createDataFrame(
        [
            ("s1", "p1", D(2021, 1, 1), 3.0),
            ("s1", "p1", D(2021, 1, 4), 5.0),
            ("s2", "p1", D(2021, 1, 3), 2.0),  # one day: nothing to fill
        ],
        "store_id string, product_id string, date date, quantity double",
    )
    filled = daily.transform(fill_missing_days)
    assert_df_equal(
        filled,
        [
            ("s1", "p1", D(2021, 1, 1), 3.0, False),
            ("s1", "p1", D(2021, 1, 2), 0.0, True),
            ("s1", "p1", D(2021, 1, 3), 0.0, True),
            ("s1", "p1", D(2021, 1, 4), 5.0, False),
            ("s2", "p1", D(2021, 1, 3), 2.0, False),
        ],
        [*DAY_KEYS, "quantity", "filled"],
    )
    assert filled.filter("filled").count() == 2


def test_day_features_and_index(spark: SparkSession) -> None:
    daily = spark.createDataFrame(
        [("s1", "p1", D(2024, 2, 29), 1.0), ("s1", "p1", D(2024, 3, 3), 2.0)],
        "store_id string, product_id string, date date, quantity double",
    )
    assert_df_equal(
        daily.transform(with_day_features).transform(with_day_index),
        [
            # 2024-02-29 is a Thursday (Spark: 1 = Sunday, so 5); 2024-03-03 a Sunday.
            ("s1", "p1", D(2024, 2, 29), 1.0, 2024, 2, 5, 29, 19782),
            ("s1", "p1", D(2024, 3, 3), 2.0, 2024, 3, 1, 3, 19785),
        ],
        [
            *DAY_KEYS,
            "quantity",
            "year",
            "month",
            "day_of_week",
            "day_of_month",
            "period_index",
        ],
    )
    assert day_label(19782) == "2024-02-29"


def test_day_pipeline_records_its_feature_order_and_month_is_unchanged(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, granularity="both", _env_file=None)
    month = pipeline_parameters(settings, 3, 3, "month")
    day = pipeline_parameters(settings, 3, 3, "day")
    assert month["features"] == ["month", "year", "store", "product"] == list(FEATURES)
    assert month["granularity"] == "month"
    assert (
        day["features"]
        == list(DAY_FEATURES)
        == [
            "day_of_week",
            "day_of_month",
            "month",
            "year",
            "store",
            "product",
        ]
    )
    assembler = build_pipeline(settings, 3, 3, "day").getStages()[2]
    assert isinstance(assembler, VectorAssembler)
    assert assembler.getInputCols() == list(DAY_FEATURES)
    # `both` without a granularity means the month model's parameters.
    assert pipeline_parameters(settings, 3, 3) == month


def test_day_windows_are_whole_calendar_months_of_days() -> None:
    first = (D(2023, 1, 1) - D(1970, 1, 1)).days
    last = (D(2024, 2, 20) - D(1970, 1, 1)).days  # history ends mid-month
    shape = HistoryShape(1000, 2, 2, first, last, "day")
    windows = plan_windows(shape, count=3, horizon=3)
    assert [w.to_dict() for w in windows] == [
        {
            "origin": "2023-05-31",
            "months": ["2023-06", "2023-07", "2023-08"],
            "first": "2023-06-01",
            "last": "2023-08-31",
        },
        {
            "origin": "2023-08-31",
            "months": ["2023-09", "2023-10", "2023-11"],
            "first": "2023-09-01",
            "last": "2023-11-30",
        },
        {
            "origin": "2023-11-30",
            "months": ["2023-12", "2024-01", "2024-02"],
            "first": "2023-12-01",
            "last": "2024-02-20",
        },
    ]
    assert len(windows[-1].months) == 31 + 31 + 20
    short = HistoryShape(10, 1, 1, last - 40, last, "day")
    assert [w.to_dict()["origin"] for w in plan_windows(short, count=3, horizon=1)] == [
        "2024-01-31"
    ]


def test_horizon_months_follow_the_last_day() -> None:
    assert horizon_months(D(2023, 11, 5), 3) == [(2023, 12), (2024, 1), (2024, 2)]


def _publish(registry: ModelRegistry, tmp_path: Path, name: str, meta: dict[str, object]) -> str:
    staged = tmp_path / name
    staged.mkdir()
    return registry.publish(staged, meta, activate=True, reason=name, actor="test").version


def test_registry_keeps_one_active_pointer_per_granularity(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    m1 = _publish(registry, tmp_path, "m1", {"parameters": {"granularity": "month"}})
    d1 = _publish(registry, tmp_path, "d1", {"granularity": "day"})
    m2 = _publish(registry, tmp_path, "m2", {})  # old metadata without granularity: month
    assert (m1, d1, m2) == ("v0001", "v0002", "v0003")
    assert registry.active_name() == m2 and registry.active_name("day") == d1
    assert (tmp_path / "models" / "ACTIVE").read_text().strip() == m2  # old readers still work
    by_version = {v.version: (v.granularity, v.active) for v in registry.versions()}
    assert by_version == {m1: ("month", False), d1: ("day", True), m2: ("month", True)}
    assert [v.version for v in registry.versions("day")] == [d1]
    assert registry.require_active("day").version == d1
    registry.activate(m1, reason="rollback", actor="test")  # moves the month pointer only
    assert registry.active_name() == m1 and registry.active_name("day") == d1
    last = registry.history()[-1]
    assert last["granularity"] == "month" and last["previous"] == m2
    assert json.loads((tmp_path / "models" / d1 / "metadata.json").read_text())["granularity"] == (
        "day"
    )


def test_a_day_candidate_is_compared_with_the_day_pointer_only(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    _publish(registry, tmp_path, "m1", {"granularity": "month"})
    staged = tmp_path / "d1"
    staged.mkdir()
    # The month pointer names v0001, but the day pointer is empty: expecting "no active" holds.
    published = registry.publish(
        staged, {"granularity": "day"}, activate=True, reason="r", actor="t", expected_active=None
    )
    assert published.active and registry.active_name("day") == "v0002"
    with pytest.raises(Exception, match="no active day model"):
        ModelRegistry(tmp_path / "empty").require_active("day")
