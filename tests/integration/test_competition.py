"""The model competition in a real training: a statistical winner publishes a forecast table,
and the version's answers are exactly the numbers the training wrote."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from salesflow.config import Settings
from salesflow.registry import ModelRegistry
from salesflow.sales.generate import generate_sales
from salesflow.serving.model import ServedModel
from salesflow.serving.table import TABLE_FILE
from salesflow.spark.train import TrainInput, train

pytestmark = pytest.mark.slow


def zero_sales(df: DataFrame) -> DataFrame:
    """Every quantity 0: a forest fitted on it forecasts nothing, so any per-series model wins."""
    return df.withColumn("quantity", F.lit(0.0))


def test_a_statistical_winner_is_served_from_its_table(spark: SparkSession, tmp_path: Path) -> None:
    source = tmp_path / "sales.csv"
    generate_sales(source, rows=4_000, seed=5)
    settings = Settings(
        data_dir=tmp_path / "data",
        _env_file=None,
        num_trees=5,
        candidates=["forest", "AutoETS", "SeasonalNaive"],
        forecast_horizon=4,
    )
    registry = ModelRegistry(settings.warehouse_path / "models")
    result = train(
        spark,
        settings,
        [TrainInput(source.as_uri())],
        registry=registry,
        fit_transform=zero_sales,
    )
    version = registry.get(result.version)
    competition = version.metadata["competition"]
    board = {row["name"]: row for row in competition["leaderboard"]}
    assert set(board) == {"forest", "AutoETS", "SeasonalNaive"}
    assert competition["winner"] in {"AutoETS", "SeasonalNaive"}, competition
    assert board["forest"]["rank"] == 3 and board["forest"]["wape"] == pytest.approx(1.0)
    assert set(competition["intervals"]["factors"]) == {"0.8", "0.95"}

    spec = version.metadata["forecast_table"]
    assert spec["model"] == competition["winner"]
    assert spec["last_period_index"] - spec["first_period_index"] == 3  # four months ahead
    table = pq.read_table(version.path / TABLE_FILE).to_pydict()
    stores, products = sorted(set(table["store_id"])), sorted(set(table["product_id"]))
    assert len(table["store_id"]) == len(stores) * len(products) * 4

    served = ServedModel.load(version)
    periods = np.asarray(table["period_index"])
    years, months = periods // 12, periods % 12 + 1
    scored = served.score(table["store_id"], table["product_id"], list(years), list(months))
    np.testing.assert_array_equal(scored.predicted, table["predicted_quantity"])
    np.testing.assert_array_equal(scored.upper["0.95"], table["hi_95"])
    assert set(scored.basis) == {"model"}

    after = served.score([stores[0]], [products[0]], [int(years.max()) + 1], [int(months.max())])
    assert after.basis[0] == "outside_horizon" and np.isnan(after.predicted[0])

    # The next training scores the table-backed active version through its own contest: a
    # forecast table has no parameters to refit.
    again = train(spark, settings, [TrainInput(source.as_uri())], registry=registry)
    scored_by = again.promotion["active_scored_by"]
    assert scored_by == f"v0001's model, {competition['winner']}, scored in this run's contest"
    assert again.promotion["active_wape"] is not None


def hundredfold_sales(df: DataFrame) -> DataFrame:
    """Every quantity x100: a forest fitted on it over-forecasts a hundredfold (sparse daily
    sales give a near-zero forecast a WAPE near 1, which a per-series model may not beat)."""
    return df.withColumn("quantity", F.col("quantity") * 100)


def test_day_models_compete_with_weekly_statistical_models(
    spark: SparkSession, tmp_path: Path
) -> None:
    source = tmp_path / "sales.csv"
    generate_sales(source, rows=3_000, seed=8, start=date(2021, 6, 1))
    settings = Settings(
        data_dir=tmp_path / "data",
        _env_file=None,
        num_trees=5,
        granularity="day",
        candidates=["forest", "SeasonalNaive"],
        forecast_horizon_days=14,
    )
    registry = ModelRegistry(settings.warehouse_path / "models")
    result = train(
        spark,
        settings,
        [TrainInput(source.as_uri())],
        registry=registry,
        fit_transform=hundredfold_sales,
    )
    version = registry.get(result.version)
    competition = version.metadata["competition"]
    assert competition["statistical_skipped"] is None
    assert competition["winner"] == "SeasonalNaive", competition

    spec = version.metadata["forecast_table"]
    assert spec["last_period_index"] - spec["first_period_index"] == 13  # two weeks of days
    table = pq.read_table(version.path / TABLE_FILE).to_pydict()
    days = [date(1970, 1, 1) + timedelta(days=int(i)) for i in table["period_index"]]
    served = ServedModel.load(version)
    scored = served.score(
        table["store_id"],
        table["product_id"],
        [d.year for d in days],
        [d.month for d in days],
        days,
    )
    np.testing.assert_array_equal(scored.predicted, table["predicted_quantity"])
    assert set(scored.basis) == {"model"}
    # Seasonal-naive with a weekly season: a day repeats the same weekday of the week before.
    first = int(spec["first_period_index"])
    value = {
        (store, product, period): quantity
        for store, product, period, quantity in zip(
            table["store_id"],
            table["product_id"],
            table["period_index"],
            table["predicted_quantity"],
            strict=True,
        )
    }
    series = {(store, product) for store, product, _ in value}
    assert series and all(value[(*s, first)] == value[(*s, first + 7)] for s in series)
