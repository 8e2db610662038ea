"""Rolling-origin backtests on real Spark: baselines and MASE checked by hand on a tiny history,
the window transforms, fallback means and importances, how the gate scores the active version,
and split-conformal coverage on a generated dataset large enough to judge it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyspark.sql import DataFrame, SparkSession

from salesflow.config import Settings
from salesflow.registry import ModelVersion
from salesflow.sales.catalog import catalog_from_dict
from salesflow.sales.contract import check_header
from salesflow.sales.generate import generate_sales
from salesflow.spark import backtest, scoring
from salesflow.spark.pipeline import (
    FEATURES,
    HistoryShape,
    build_pipeline,
    fallback_statistics,
    feature_importances,
    indexer_labels,
    pipeline_from_parameters,
    pipeline_parameters,
)
from salesflow.spark.promotion import active_wape
from salesflow.spark.read import read_sales
from salesflow.spark.transforms import (
    aggregate_monthly,
    clean,
    seasonal_changes,
    validate,
    window_rows,
    with_period_index,
)
from tests.fixtures.data import assert_df_equal

pytestmark = pytest.mark.slow

SCHEMA = "store_id string, product_id string, year int, month int, quantity double"
JAN_2020 = 2020 * 12


def _month(offset: int) -> tuple[int, int]:
    """(year, month) `offset` months after 2020-01."""
    year, month = divmod(JAN_2020 + offset, 12)
    return year, month + 1


def _tiny_history(spark: SparkSession) -> DataFrame:
    """17 months (2020-01..2021-05). s1/p1 is 10, 11, ..., 26; s2/p1 twice that; s1/p2 is 5 in
    the last 8 months only, so it never has a value a year earlier."""
    rows = []
    for k in range(17):
        rows.append(("s1", "p1", *_month(k), 10.0 + k))
        rows.append(("s2", "p1", *_month(k), 2 * (10.0 + k)))
        if k >= 9:
            rows.append(("s1", "p2", *_month(k), 5.0))
    return spark.createDataFrame(rows, SCHEMA)


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", _env_file=None, **overrides)


def test_backtest_baselines_and_mase_by_hand(spark: SparkSession, tmp_path: Path) -> None:
    history = _tiny_history(spark)
    shape = HistoryShape.of(history)
    prepared = backtest.prepare(history, shape, count=2, horizon=2)
    # Windows: fit to 2021-01, predict 2021-02..03; fit to 2021-03, predict 2021-04..05.
    assert [w.to_dict() for w in prepared.windows] == [
        {"origin": "2021-01", "months": ["2021-02", "2021-03"]},
        {"origin": "2021-03", "months": ["2021-04", "2021-05"]},
    ]
    params = pipeline_parameters(_settings(tmp_path, num_trees=3), shape.stores, shape.products)
    bt = backtest.run(prepared, params)
    found = scoring.summary(bt, horizon=2)
    # Each window has 2 months x 3 series; s1/p2 has no seasonal-naive value: 4 compared rows.
    assert [(w["rows"], w["rows_total"]) for w in found["windows"]] == [(4, 6), (4, 6)]
    # Naive = the value at the origin: s1/p1 errors 1, 2 per window, s2/p1 errors 2, 4.
    # Seasonal naive = 12 months earlier: s1/p1 is always 12 short, s2/p1 24 short.
    # Actuals: s1/p1 23..26 (sum 98), s2/p1 46..52 (sum 196).
    overall = found["overall"]
    assert overall["naive"] == {
        "rmse": round(np.sqrt((1 + 4 + 4 + 16) * 2 / 8), 4),
        "mae": 2.25,
        "wape": round(18 / 294, 4),
        # MASE scale: mean |y(t) - y(t-12)| in the fit part, over both series = (12 + 24) / 2.
        "mase": 0.125,
    }
    assert overall["seasonal_naive"] == {
        "rmse": round(np.sqrt((144 + 576) / 2), 4),
        "mae": 18.0,
        "wape": round(144 / 294, 4),
        "mase": 1.0,
    }
    s2 = next(s for s in found["per_series"] if s["store_id"] == "s2")
    assert (s2["rows"], s2["naive"]["mae"], s2["naive"]["mase"]) == (4, 3.0, 0.125)  # scale 24
    assert [s["product_id"] for s in found["per_series"]] == ["p1", "p1"]  # s1/p2 never compared
    # The model's scores are the same formulas on the collected predictions.
    mask = bt.compared
    errors = np.abs(bt.model[mask] - bt.actual[mask])
    assert overall["model"]["mae"] == round(float(errors.mean()), 4)
    assert overall["model"]["wape"] == round(float(errors.sum()) / 294, 4)
    assert found["skill"] == scoring.skill(
        overall["model"]["wape"], overall["seasonal_naive"]["wape"]
    )
    assert bool(np.all(bt.model >= 0)) and len(bt.model) == 12
    holdout = scoring.holdout_metrics(bt, months=2, horizon=2)
    assert holdout is not None and holdout["baseline"]["mae"] == 18.0
    assert holdout["holdout_rows"] == 4 and holdout["holdout_rows_total"] == 6


def test_labels_order_like_string_indexer() -> None:
    # Most frequent first; ties by code point (Spark sorts UTF-8 bytes), so U+FF01 comes before
    # U+1F600, which Java's UTF-16 compareTo would put first (a surrogate pair, D83D...).
    counts = {"b": 3, "a": 3, "c": 5, "p\U0001f600": 1, "p\uff01": 1}
    assert indexer_labels(counts) == ["c", "a", "b", "p\uff01", "p\U0001f600"]


def test_refits_from_counted_labels_equal_fitted_pipelines(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Backtest refits build their indexers from `prepare`'s counts instead of fitting them: the
    labels and the fitted forest must be exactly what `Pipeline.fit` gives on each window."""
    rows = []
    for k in range(20):
        rows.append(("s1", "p\uff01", *_month(k), 10.0 + k))
        rows.append(("s2", "p\U0001f600", *_month(k), 3.0 * k))  # tie with p\uff01 in every window
        if k % 3 == 0:
            rows.append(("s3", "p1", *_month(k), 7.0))
        if k >= 15:  # first sold inside the backtest: unknown to the first window's refit
            rows.append(("s1", "p2", *_month(k), 4.0 + k))
    history = spark.createDataFrame(rows, SCHEMA)
    shape = HistoryShape.of(history)
    prepared = backtest.prepare(history, shape, count=3, horizon=2)
    params = pipeline_parameters(_settings(tmp_path, num_trees=4), shape.stores, shape.products)
    assert len(prepared.labels) == 3
    assert "p2" not in prepared.labels[0][1] and "p2" in prepared.labels[-1][1]
    bt = backtest.run(prepared, params)
    # The final fit builds its indexers from the shape's labels: StringIndexer's, on everything.
    whole = pipeline_from_parameters(params).fit(history)
    assert (whole.stages[0].labels, whole.stages[1].labels) == shape.labels  # type: ignore[attr-defined]
    for i, (window, labels) in enumerate(zip(prepared.windows, prepared.labels, strict=True)):
        frame = prepared.history.filter(f"period_index <= {window.origin}")
        fitted = pipeline_from_parameters(params).fit(frame)
        built = pipeline_from_parameters(params, labels).fit(frame)
        assert (fitted.stages[0].labels, fitted.stages[1].labels) == labels  # type: ignore[attr-defined]
        assert (built.stages[0].labels, built.stages[1].labels) == labels  # type: ignore[attr-defined]
        # Same trees (the debug string's first line names the model's uid).
        trees = [m.stages[-1].toDebugString.split("\n", 1)[1] for m in (fitted, built)]  # type: ignore[attr-defined]
        assert trees[0] == trees[1]
        scored = [
            m.transform(prepared.history).orderBy("store_id", "product_id", "period_index")
            for m in (fitted, built)
        ]
        assert [r.prediction for r in scored[0].collect()] == [
            r.prediction for r in scored[1].collect()
        ]
        # What the backtest scored for this window is what the plainly fitted pipeline predicts.
        in_window = prepared.rows.filter(f"window = {i}").orderBy(
            "store_id", "product_id", "period_index"
        )
        expected = [max(r.prediction, 0.0) for r in fitted.transform(in_window).collect()]
        order = np.lexsort((bt.period, bt.product.astype(str), bt.store.astype(str)))
        assert [float(v) for v in bt.model[order][bt.window[order] == i]] == expected


def test_window_transforms(spark: SparkSession) -> None:
    history = spark.createDataFrame(
        [("s1", "p1", *_month(k), float(k)) for k in (0, 1, 12, 13, 14, 25)], SCHEMA
    ).transform(with_period_index)
    assert_df_equal(
        history.transform(seasonal_changes).select("month", "year", "change"),
        [
            (1, 2020, None),
            (2, 2020, None),
            (1, 2021, 12.0),
            (2, 2021, 12.0),
            (3, 2021, None),
            (2, 2022, 12.0),
        ],
    )
    windows = spark.createDataFrame(
        [
            (0, JAN_2020 + 12, JAN_2020 + 13, JAN_2020 + 14),
            (1, JAN_2020 + 13, JAN_2020 + 25, JAN_2020 + 25),
        ],
        "window int, origin int, first int, last int",
    )
    # 2022-02 seen from origin 2021-02 is 12 months ahead: its seasonal-naive value is 2021-02's.
    assert_df_equal(
        windows.transform(window_rows(history)).select("window", "period_index", "seasonal"),
        [(0, JAN_2020 + 13, 1.0), (0, JAN_2020 + 14, None), (1, JAN_2020 + 25, 13.0)],
    )


def test_fallback_means_and_feature_importances(spark: SparkSession, tmp_path: Path) -> None:
    history = _tiny_history(spark)
    fallback = fallback_statistics(history)
    s1 = [10.0 + k for k in range(17)] + [5.0] * 8
    s2 = [2 * (10.0 + k) for k in range(17)]
    overall = float(np.mean(s1 + s2))
    profiles = {k: fallback.pop(k) for k in list(fallback) if k.endswith(("_profile", "_spread"))}
    assert fallback == {
        "global_mean": round(overall, 4),
        "product_mean": {"p1": round(float(np.mean(s1[:17] + s2)), 4), "p2": 5.0},
        "store_mean": {"s1": round(float(np.mean(s1)), 4), "s2": 36.0},
        "store_level": {
            "s1": round(float(np.mean(s1)) / overall, 4),
            "s2": round(36.0 / overall, 4),
        },
    }
    # Month profiles: the same means per calendar month (and their sample deviation), computed
    # here with pandas from the rows themselves.
    rows = history.select("store_id", "product_id", "month", "quantity").toPandas()
    by_month = rows.groupby("month")["quantity"]
    assert profiles["global_profile"] == [
        round(float(by_month.mean().get(m, np.nan)), 4) if m in by_month.groups else None
        for m in range(1, 13)
    ]
    january = rows[(rows["product_id"] == "p1") & (rows["month"] == 1)]["quantity"]
    assert profiles["product_profile"]["p1"][0] == round(float(january.mean()), 4)
    assert profiles["product_spread"]["p1"][0] == round(float(january.std(ddof=1)), 4)
    assert set(profiles["store_profile"]) == {"s1", "s2"}
    model = build_pipeline(_settings(tmp_path, num_trees=3), 2, 2).fit(history)
    importances = feature_importances(model)
    assert list(importances) == list(FEATURES)
    assert abs(sum(importances.values()) - 1) < 1e-3 and importances["store"] > 0


def test_the_active_version_is_scored_on_the_candidates_windows(
    spark: SparkSession, tmp_path: Path
) -> None:
    history = _tiny_history(spark)
    shape = HistoryShape.of(history)
    prepared = backtest.prepare(history, shape, count=2, horizon=2)
    params = pipeline_parameters(_settings(tmp_path, num_trees=3), shape.stores, shape.products)
    mine = scoring.summary(backtest.run(prepared, params), horizon=2)

    def version(metadata: dict[str, Any]) -> ModelVersion:
        return ModelVersion("v0001", tmp_path, metadata, True)

    recorded = {
        "parameters": params,
        "training_sources": ["a"],
        "backtest": {
            "windows": [w.to_dict() for w in prepared.windows],
            "overall": {"model": {"wape": 0.123}},
        },
    }
    assert active_wape(version(recorded), prepared, shape, params, mine, ["a"], exact=True) == (
        0.123,
        "reused v0001's recorded backtest (same parameters and history)",
    )
    wape, how = active_wape(version(recorded), prepared, shape, params, mine, ["b"], exact=True)
    assert wape == mine["overall"]["model"]["wape"] and "repeats the candidate's own fits" in how
    other = {**recorded, "parameters": {**params, "numTrees": 2, "maxBins": 2}}
    wape, how = active_wape(version(other), prepared, shape, params, mine, ["a"], exact=True)
    refit = {**params, "numTrees": 2, "maxBins": 4}  # raised to 2 stores + 2 extra bins
    expected = scoring.overall(backtest.run(prepared, refit))["model"]["wape"]
    assert (wape, how) == (expected, "refitted v0001's parameters on these windows")
    wape, how = active_wape(version({}), prepared, shape, params, mine, ["a"], exact=True)
    assert (wape, how) == (None, "v0001 records no parameters to refit")


#: 16 stores x 16 products: 256 series. The last window holds 3 x 256 = 768 rows, the two
#: calibrating windows 1,536. For exchangeable residuals, the measured coverage of an 80%
#: interval has a standard deviation of about sqrt(0.8 * 0.2 * (1/768 + 1/1536)) = 0.018, so
#: 0.8 +- 0.05 is a band of about 3 sigma.
STORES, PRODUCTS, BAND = 16, 16, 0.05


def _flat_catalog() -> dict[str, Any]:
    """Stores and products with different levels but no season, so residuals stay exchangeable.

    With the packaged seasonal catalogue they are not: errors grow with the season's level and
    an 80% interval calibrated on July-December covered 48-93% of later windows (measured).
    """
    rng = np.random.default_rng(1)
    goodness = rng.integers(1, 6, STORES)
    stores = [
        {"id": f"s{i}", "name": f"S{i}", "goodness": float(g)} for i, g in enumerate(goodness)
    ]
    products = []
    for j in range(PRODUCTS):
        mu = float(rng.uniform(2, 20))
        products.append(
            {"id": f"p{j}", "name": f"P{j}", "price": 1.0, "monthly": [[mu, 0.3 * mu]] * 12}
        )
    return {"stores": stores, "products": products}


def test_conformal_coverage_on_generated_data(spark: SparkSession, tmp_path: Path) -> None:
    source = tmp_path / "sales.csv"
    generate_sales(
        source,
        rows=150_000,
        seed=5,
        catalog=catalog_from_dict(_flat_catalog()),
        start=dt.date(2019, 1, 1),
        end=dt.date(2022, 3, 31),
    )
    header = check_header(source.read_bytes()[:4096])
    history = (
        read_sales(spark, str(source), header)
        .transform(validate)
        .transform(clean)
        .transform(aggregate_monthly)
        .localCheckpoint()
    )
    shape = HistoryShape.of(history)
    assert (shape.stores, shape.products, shape.rows) == (STORES, PRODUCTS, STORES * PRODUCTS * 39)
    params = pipeline_parameters(_settings(tmp_path, num_trees=5), shape.stores, shape.products)
    bt = backtest.run(backtest.prepare(history, shape, count=3, horizon=3), params)
    found = scoring.intervals(bt, [0.8, 0.95])
    assert found["coverage_rows"] == 3 * STORES * PRODUCTS
    assert found["calibration_rows"] == 9 * STORES * PRODUCTS
    coverage = found["coverage_last_window"]
    assert abs(coverage["0.8"] - 0.8) <= BAND, coverage
    assert abs(coverage["0.95"] - 0.95) <= 0.03, coverage  # sd 0.0096 at 95%: again ~3 sigma
    widths = found["levels"]
    assert 0 < widths["0.8"]["half_width"] < widths["0.95"]["half_width"]
