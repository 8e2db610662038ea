"""The backtest's per-series lookup on hand-made Arrow tables (no Spark session): each scored row
gets its own (window, store, product) values, NaN where the series is missing or null."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from salesflow.spark.backtest import _SERIES, _objects, _series_values


def test_each_row_gets_its_own_series_values_and_nan_where_there_are_none() -> None:
    series = pa.table(
        {
            "window": pa.array([1, 0, 0, 1], pa.int32()),
            "store_id": ["s1", "s1", "s2", "s2"],
            "product_id": ["p1", "p1", "p1", "p2"],
            "naive": [10.0, 5.0, None, 7.0],
            "series_scale": [1.5, 0.5, 2.0, None],
        }
    )
    rows = pa.table(
        {
            "window": pa.array([0, 1, 0, 1, 1, 0, 0], pa.int32()),
            # s1/p1 in both windows, s2/p1 (null naive), s2/p2 (null scale), then three misses:
            # s2/p2 not in window 0, an unknown store, an unknown product.
            "store_id": ["s1", "s1", "s2", "s2", "s1", "s2", "s3"],
            "product_id": ["p1", "p1", "p1", "p2", "p2", "p2", "p1"],
        }
    )
    naive, scale = _series_values(rows, series, ["naive", "series_scale"])
    nan = np.nan
    np.testing.assert_array_equal(naive, [5.0, 10.0, nan, 7.0, nan, nan, nan])
    np.testing.assert_array_equal(scale, [0.5, 1.5, 2.0, nan, nan, nan, nan])


def test_no_series_gives_nan_for_every_row() -> None:
    rows = pa.table({"window": pa.array([0], pa.int32()), "store_id": ["s"], "product_id": ["p"]})
    (naive,) = _series_values(rows, _SERIES.empty_table(), ["naive"])
    assert np.isnan(naive).all() and len(naive) == 1


def test_string_columns_become_shared_objects() -> None:
    column = pa.chunked_array([["s1", "s2"], ["s1", "s1"]])
    values = _objects(column)
    assert values.tolist() == ["s1", "s2", "s1", "s1"]
    assert values[0] is values[2] is values[3]  # one str per distinct id
