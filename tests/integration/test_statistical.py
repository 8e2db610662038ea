"""The statistical-forecast step on real Spark: the exact schema and row count, the same numbers as
the per-group function computes without Spark, nulls for missing intervals, and `max_series`."""

from __future__ import annotations

import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession

from salesflow.errors import InputError
from salesflow.spark.statistical import (
    StatSpec,
    forecast_series,
    output_columns,
    output_schema,
    statistical_forecasts,
)
from tests.fixtures.data import assert_df_equal

pytestmark = pytest.mark.slow

SCHEMA = (
    "window int, origin int, store_id string, product_id string, period_index int, quantity double"
)
PATTERN = [10.0, 12.0, 15.0, 20.0, 25.0, 30.0, 28.0, 24.0, 18.0, 14.0, 11.0, 9.0]
START = 2020 * 12
MODELS = ("AutoTheta", "SeasonalNaive")  # cheap fits: this file checks the plumbing, not the models
HORIZON = 3


def _rows() -> list[tuple[int, int, str, str, int, float]]:
    """Two windows (origins 2021-12 and 2022-03) over 28 months of three series: s1/p1 the pattern,
    s2/p1 twice it with 2021-06 missing, s1/p2 only from 2022-01 (short in window 1, absent
    from window 0); window 0 also holds the later rows, which the fit must ignore."""
    rows = []
    for window, origin in ((0, START + 23), (1, START + 26)):
        for k in range(28):
            rows.append((window, origin, "s1", "p1", START + k, PATTERN[k % 12]))
            if k != 17:
                rows.append((window, origin, "s2", "p1", START + k, 2 * PATTERN[k % 12]))
            if k >= 24:
                rows.append((window, origin, "s1", "p2", START + k, 5.0 + k))
    return rows


@pytest.fixture(scope="module")
def history(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame(_rows(), SCHEMA)


def test_the_step_gives_one_row_per_window_series_model_and_step(history: DataFrame) -> None:
    out = history.transform(statistical_forecasts(MODELS, season=12, horizon=HORIZON))
    assert ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in out.schema) == (
        output_schema((80, 95))
    )
    # window 0: s1/p1, s2/p1 (s1/p2 starts after its origin); window 1: all three
    assert out.count() == 5 * (len(MODELS) + 1) * HORIZON
    # the same frame as the per-group function computes without Spark
    spec = StatSpec(MODELS, 12, HORIZON)
    local = pd.DataFrame(_rows(), columns=[c.split()[0] for c in SCHEMA.split(", ")])
    expected = pd.concat(
        [
            forecast_series(group, spec)
            for _, group in local.groupby(["window", "store_id", "product_id"])
        ]
    )
    assert_df_equal(out, list(expected.itertuples(index=False)), output_columns((80, 95)), rel=1e-9)


def test_seasonal_naive_repeats_the_year_with_the_missing_month_as_zero(history: DataFrame) -> None:
    out = history.transform(statistical_forecasts(("SeasonalNaive",), season=12, horizon=HORIZON))
    naive = out.where("model = 'SeasonalNaive' and product_id = 'p1'")
    # window 1 (origin 2022-03) forecasts 2022-04..06 from 2021-04..06; s2's 2021-06 is missing
    assert_df_equal(
        naive.select("window", "store_id", "period_index", "forecast"),
        [
            (0, "s1", START + 24, 10.0),
            (0, "s1", START + 25, 12.0),
            (0, "s1", START + 26, 15.0),
            (0, "s2", START + 24, 20.0),
            (0, "s2", START + 25, 24.0),
            (0, "s2", START + 26, 30.0),
            (1, "s1", START + 27, 20.0),
            (1, "s1", START + 28, 25.0),
            (1, "s1", START + 29, 30.0),
            (1, "s2", START + 27, 40.0),
            (1, "s2", START + 28, 50.0),
            (1, "s2", START + 29, 0.0),
        ],
    )


def test_a_single_observation_has_null_bounds(spark: SparkSession) -> None:
    one = spark.createDataFrame([(0, START, "s1", "p1", START, 4.0)], SCHEMA)
    out = one.transform(statistical_forecasts(("AutoETS",), season=12, horizon=1))
    assert_df_equal(
        out.drop("window", "store_id", "product_id"),
        [
            (START + 1, "AutoETS", 4.0, None, None, None, None, True),
            (START + 1, "Combination", 4.0, None, None, None, None, True),
        ],
    )


def test_max_series_fits_only_the_best_sellers(history: DataFrame) -> None:
    out = history.transform(statistical_forecasts(MODELS, season=12, horizon=HORIZON, max_series=1))
    fitted = out.where("not fallback").select("window", "store_id", "product_id").distinct()
    assert_df_equal(fitted, [(0, "s2", "p1"), (1, "s2", "p1")])
    assert out.count() == 5 * (len(MODELS) + 1) * HORIZON


def test_a_missing_column_is_named(history: DataFrame) -> None:
    with pytest.raises(
        InputError, match="need column\\(s\\) origin; the frame has window, store_id"
    ):
        history.drop("origin").transform(statistical_forecasts(MODELS, season=12, horizon=2))
