"""The backtest's collected rows on hand-made Arrow tables (no Spark session): each scored row gets
its own (window, store, product) values, NaN where the series is missing or null; the collected
table's memory goes back to the OS."""

from __future__ import annotations

import gc
import os
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa

from salesflow.spark.backtest import (
    _SERIES,
    _collected,
    _objects,
    _series_values,
    release_arrow_memory,
)
from salesflow.spark.windows import Window
from tests.fixtures.memory import rss_mib


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


def test_collected_rows_become_numpy_columns_across_chunks() -> None:
    series = pa.table(
        {
            "window": pa.array([0, 1], pa.int32()),
            "store_id": ["s1", "s1"],
            "product_id": ["p1", "p1"],
            "naive": [4.0, 6.0],
            "series_scale": [0.5, None],
        }
    )
    part: dict[str, Any] = {
        "window": pa.array([0, 1], pa.int32()),
        "store_id": ["s1", "s1"],
        "product_id": ["p1", "p1"],
        "period_index": pa.array([11, 14], pa.int32()),
        "quantity": [3.0, 5.0],
        "seasonal": [None, 2.0],
        "model": [2.5, 4.5],
    }
    table = pa.concat_tables([pa.table(part), pa.table(part).slice(1)])  # two chunks
    windows = [Window(origin=10, months=(11, 12, 13)), Window(origin=13, months=(14, 15, 16))]
    prepared = SimpleNamespace(series=series, pooled_scale=[1.0, None], windows=windows)

    bt = _collected(table, prepared)  # type: ignore[arg-type]

    nan = np.nan
    assert bt.windows == windows
    assert bt.window.tolist() == [0, 1, 1] and bt.period.tolist() == [11, 14, 14]
    assert bt.store.tolist() == ["s1"] * 3 and bt.product.tolist() == ["p1"] * 3
    np.testing.assert_array_equal(bt.actual, [3.0, 5.0, 5.0])
    np.testing.assert_array_equal(bt.model, [2.5, 4.5, 4.5])
    np.testing.assert_array_equal(bt.seasonal, [nan, 2.0, 2.0])
    np.testing.assert_array_equal(bt.naive, [4.0, 6.0, 6.0])
    np.testing.assert_array_equal(bt.series_scale, [0.5, nan, nan])
    np.testing.assert_array_equal(bt.pooled_scale, [1.0, nan, nan])
    assert bt.window.dtype.kind == "i" and bt.actual.dtype == np.float64


def test_a_dropped_tables_memory_goes_back_to_the_os() -> None:
    """pyarrow's default pool keeps freed buffers for reuse; release_arrow_memory returns them."""
    values = np.arange(8_000_000, dtype=np.float64)  # 64 MB, copied into the Arrow pool below
    table = pa.concat_tables(
        [pa.table({"x": values[:4_000_000]}), pa.table({"x": values[4_000_000:]})]
    )
    table = table.combine_chunks()
    del values
    gc.collect()
    held = rss_mib(os.getpid())
    del table
    gc.collect()
    release_arrow_memory()
    assert held - rss_mib(os.getpid()) > 40
