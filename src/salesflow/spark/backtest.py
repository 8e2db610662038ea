"""Rolling-origin backtests: the model refitted at each window's origin, its predictions collected.

For each window (`salesflow.spark.windows`) the pipeline is refitted on the periods up to the
window's origin and predicts the window. Each predicted row carries the naive forecast (the
series' last value at the origin) and the seasonal-naive one (the same month a year earlier; for a
day model the same weekday 52 weeks (364 days) earlier, which keeps the weekly pattern a
same-date-last-year value would shift by a day or two). Spark does the fitting and one collect of
the (small) scored rows per run; `salesflow.spark.scoring` computes every metric with numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import reduce
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from py4j.java_gateway import JavaObject
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.util import inheritable_thread_target

from salesflow.spark.pipeline import (
    HistoryShape,
    indexer_labels,
    period_indexer,
    pipeline_from_parameters,
)
from salesflow.spark.transforms import (
    DAY_FEATURE_COLUMNS,
    DAY_SEASON,
    SEASON,
    seasonal_changes,
    window_rows,
)
from salesflow.spark.windows import Window, plan_windows

__all__ = ["Backtest", "FitTransform", "Prepared", "prepare", "run"]

#: Applied to every frame a candidate is fitted on; tests use it to fit a deliberately bad model.
FitTransform = Callable[[DataFrame], DataFrame]
#: Backtest fits run at once (the final fit runs alongside them in its own thread). Fitting
#: small forests is mostly Spark job latency, which threads overlap, and CPU, which they share:
#: warm 20k-row trainings took a median 4.9 s with two threads and 5.4 s with three (one process,
#: alternating, 5 runs each).
FIT_THREADS = 2
_KEYS = ["store_id", "product_id"]
#: `Prepared.series` when there are no windows.
_SERIES = pa.schema(
    [
        ("window", pa.int32()),
        ("store_id", pa.string()),
        ("product_id", pa.string()),
        ("naive", pa.float64()),
        ("series_scale", pa.float64()),
    ]
)


@dataclass(frozen=True)
class Prepared:
    """What every run on one history shares: windows, window rows, naive values, MASE scales."""

    history: DataFrame  # the monthly (or daily) history with `period_index`
    windows: list[Window]
    rows: DataFrame  # checkpointed: window, KEYS, period_index, features, quantity, seasonal
    #: Per window and series (window, KEYS): `naive`, the last value at the origin, and
    #: `series_scale`, the in-sample seasonal-naive MAE (NaN when undefined). Arrow, not dicts:
    #: 200 stores x 2,000 products over three windows are 1.2M of them.
    series: pa.Table
    pooled_scale: list[float | None]  # per window, over every series of its fit part
    labels: list[tuple[list[str], list[str]]]  # per window: its fit part's indexer labels


def prepare(history: DataFrame, shape: HistoryShape, count: int, horizon: int) -> Prepared:
    """Plan the windows; collect naive values and MASE scales; checkpoint the window rows."""
    day = shape.granularity == "day"
    season = DAY_SEASON if day else SEASON
    calendar = list(DAY_FEATURE_COLUMNS[2:]) if day else ["year", "month"]
    indexed = history.transform(period_indexer(shape.granularity))
    windows = plan_windows(shape, count, horizon)
    spark = history.sparkSession
    if not windows:
        return Prepared(indexed, [], indexed.limit(0), _SERIES.empty_table(), [], [])
    bounds = spark.createDataFrame(
        [(i, w.origin, w.months[0], w.months[-1]) for i, w in enumerate(windows)],
        "window int, origin int, first int, last int",
    )
    # Per series and window: the last value at the origin (naive), the sum and count of
    # |y(t) - y(t-season)| over the fit part (the MASE scale) and its rows (what the refit's
    # indexers count). One small aggregation, collected.
    stats = (
        indexed.transform(seasonal_changes, season)
        .join(F.broadcast(bounds), F.col("period_index") <= F.col("origin"))
        .groupBy("window", *_KEYS)
        .agg(
            F.max_by("quantity", "period_index").alias("naive"),
            F.sum("change").alias("change_sum"),
            F.count("change").alias("change_n"),
            F.count(F.lit(1)).alias("rows"),
        )
        .toArrow()
    )
    sums = np.nan_to_num(_numbers(stats, "change_sum", float))
    counts = _numbers(stats, "change_n", float)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where((counts > 0) & (sums > 0), sums / counts, np.nan)
    series = stats.select(["window", *_KEYS, "naive"]).append_column(
        "series_scale", pa.array(scale)
    )
    which = stats.column("window").to_numpy()
    pooled: list[float | None] = []
    for i in range(len(windows)):
        n, s = counts[which == i].sum(), sums[which == i].sum()
        pooled.append(float(s / n) if n and s > 0 else None)
    labels = _labels(stats, len(windows))
    del stats  # `series` keeps the columns it selected; the rest goes back to the OS
    release_arrow_memory()
    rows = (
        bounds.transform(window_rows(indexed, season))
        .select("window", *_KEYS, *calendar, "period_index", "quantity", "seasonal")
        .localCheckpoint()  # small; read once per fitted window
    )
    return Prepared(indexed, windows, rows, series, pooled, labels)


def _series_values(rows: pa.Table, series: pa.Table, columns: list[str]) -> list[np.ndarray]:
    """For each of `rows`, the `columns` of its (window, KEYS) in `series`, as floats: NaN where
    `series` lacks the row's series or has a null. Keys are compared as integers (window and the
    ids' codes), not as tuples of strings: a few arrays of numbers for millions of rows."""
    if series.num_rows == 0:
        return [np.full(rows.num_rows, np.nan) for _ in columns]

    labels = {name: pc.unique(series.column(name)) for name in _KEYS}

    def key(table: pa.Table) -> np.ndarray:
        found = _numbers(table, "window", np.int64)
        for name in _KEYS:
            code = pc.index_in(table.column(name), value_set=labels[name]).fill_null(-1)
            found = found * (len(labels[name]) + 1) + code.to_numpy() + 1  # 0: not in `series`
        return found

    theirs = key(series)
    order = np.argsort(theirs)
    theirs = theirs[order]
    mine = key(rows)
    at = np.minimum(np.searchsorted(theirs, mine), len(theirs) - 1)
    hit = theirs[at] == mine
    values = []
    for name in columns:
        column = _numbers(series, name, float)[order]  # NaN where null
        values.append(np.where(hit, column[at], np.nan))
    return values


def _objects(column: pa.ChunkedArray) -> np.ndarray:
    """A string column as an object array in which equal values are one str object (a few
    thousand ids repeated over millions of rows: 8 bytes a row, not a string each)."""
    encoded = column.combine_chunks().dictionary_encode()
    values = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
    objects: np.ndarray = values[encoded.indices.to_numpy()]
    return objects


def _labels(stats: pa.Table, windows: int) -> list[tuple[list[str], list[str]]]:
    """Per window, the store and product labels a StringIndexer fitted on its fit part gives."""
    per_key: list[list[list[str]]] = []
    for key in _KEYS:
        totals = stats.group_by(["window", key]).aggregate([("rows", "sum")])
        counts: list[dict[str, int]] = [{} for _ in range(windows)]
        for window, label, n in zip(
            totals.column("window").to_pylist(),
            totals.column(key).to_pylist(),
            totals.column("rows_sum").to_pylist(),
            strict=True,
        ):
            counts[window][label] = n
        per_key.append([indexer_labels(c) for c in counts])
    return list(zip(per_key[0], per_key[1], strict=True))


@dataclass(frozen=True)
class Backtest:
    """One parameter set's backtest: the scored rows (numpy) and what metadata records of them."""

    windows: list[Window]
    window: np.ndarray  # window number of each row
    store: np.ndarray
    product: np.ndarray
    period: np.ndarray
    actual: np.ndarray
    model: np.ndarray  # clipped at 0, as served
    naive: np.ndarray  # NaN when the series had no value at the origin
    seasonal: np.ndarray  # NaN without a value a year earlier
    series_scale: np.ndarray  # NaN when undefined
    pooled_scale: np.ndarray

    @classmethod
    def empty(cls) -> Backtest:
        """No windows (the history is too short to fit anything before a window)."""
        none, text = np.zeros(0), np.zeros(0, dtype=object)
        return cls([], none.astype(int), text, text, none.astype(int), *[none] * 6)

    @property
    def compared(self) -> np.ndarray:
        """Rows where model, naive and seasonal-naive all have a forecast (all three scored here)."""
        both: np.ndarray = np.isfinite(self.naive) & np.isfinite(self.seasonal)
        return both


def _fit(
    params: dict[str, Any], frame: DataFrame, labels: tuple[list[str], list[str]] | None
) -> JavaObject:
    """The fitted pipeline, left a Java object: a refit only transforms its window's rows, and
    pyspark's Python model wraps every tree of a forest (~1,600 py4j calls, ~0.3 s per 20-tree
    fit, serialised by the GIL across the concurrent refits)."""
    return pipeline_from_parameters(params, labels)._to_java().fit(frame._jdf)


def run(
    prepared: Prepared,
    params: dict[str, Any],
    fit_transform: FitTransform | None = None,
) -> Backtest:
    """Fit `params` at each window's origin, predict its months, collect every row once."""
    windows, history = prepared.windows, prepared.history
    spark = history.sparkSession
    frames = [history.filter(F.col("period_index") <= w.origin) for w in windows]
    # The indexers' labels were counted by `prepare`; an altered frame has its indexers fitted.
    labels: list[tuple[list[str], list[str]] | None] = list(prepared.labels)
    if fit_transform is not None:
        frames = [fit_transform(f) for f in frames]
        labels = [None] * len(frames)
    fit = inheritable_thread_target(spark)(_fit)  # keeps job tags and properties
    with ThreadPoolExecutor(max_workers=FIT_THREADS) as pool:
        models = list(pool.map(lambda job: fit(params, *job), zip(frames, labels, strict=True)))
    parts = [
        DataFrame(model.transform(prepared.rows.filter(F.col("window") == i)._jdf), spark).select(
            "window",
            *_KEYS,
            "period_index",
            "quantity",
            "seasonal",
            F.greatest(F.col("prediction"), F.lit(0.0)).alias("model"),
        )
        for i, model in enumerate(models)
    ]
    if not parts:
        return Backtest.empty()
    backtest = _collected(reduce(DataFrame.unionByName, parts).toArrow(), prepared)
    release_arrow_memory()  # the collected table's, now that it is numpy
    return backtest


def _collected(table: pa.Table, prepared: Prepared) -> Backtest:
    """The Backtest of the scored rows `run` collected (window, KEYS, period_index, quantity,
    seasonal, model): numpy columns, each converted once, and the series' naive values and
    scales looked up."""
    naive, series_scale = _series_values(table, prepared.series, ["naive", "series_scale"])
    window = _numbers(table, "window", int)
    pooled = np.asarray([np.nan if s is None else s for s in prepared.pooled_scale], float)
    return Backtest(
        windows=prepared.windows,
        window=window,
        store=_objects(table.column("store_id")),
        product=_objects(table.column("product_id")),
        period=_numbers(table, "period_index", int),
        actual=_numbers(table, "quantity", float),
        model=_numbers(table, "model", float),
        naive=naive,
        seasonal=_numbers(table, "seasonal", float),
        series_scale=series_scale,
        pooled_scale=pooled[window],
    )


def _numbers(table: pa.Table, name: str, dtype: type[Any]) -> np.ndarray:
    """A numeric column as a numpy array of `dtype`, copied once (NaN where null, for floats)."""
    return np.asarray(table.column(name).to_numpy(), dtype)


def release_arrow_memory() -> None:
    """Hand the memory of freed Arrow buffers back to the OS. pyarrow's default pool (mimalloc)
    keeps it for reuse, and nothing here reuses it: a collected table's memory stayed resident
    under the numpy arrays and scoring that follow (at 3.6M scored rows, ~240 MB)."""
    pa.default_memory_pool().release_unused()
