"""The accuracy benchmark's anchors and scores: what a planner could use instead of salesflow.

Each method learns from `Split.train` (totals per series and period before the origin) or from
the sales rows before the origin, and returns a forecast frame: unique_id, ds, yhat, and for
methods with intervals lo_80, hi_80, lo_95, hi_95. `score` joins it to the held-out totals.

- seasonal-naive: the same period one season earlier (the last season repeated);
- the original project's pipeline: `bench.seed_style_job`'s pieces (monthly sums, StringIndexer x2,
  VectorAssembler(month, year, store, product), a random forest with Spark's defaults);
- statsforecast AutoETS / AutoARIMA / AutoTheta, one model per series, its own intervals;
- mlforecast with LightGBM on lags and rolling means, one global model, recursive multi-step.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bench.accuracy_data import FREQ, Split
from bench.procs import PeakRSS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = [
    "LEVELS",
    "STATS_MODELS",
    "Measured",
    "Score",
    "coverage",
    "lightgbm_lags",
    "measure",
    "original_pipeline",
    "score",
    "seasonal_naive",
    "statistical",
    "wape",
]

#: Interval levels scored, in percent (salesflow's defaults: 0.8 and 0.95).
LEVELS: tuple[int, ...] = (80, 95)
#: statsforecast's automatic models, by the name the tables use.
STATS_MODELS: tuple[str, ...] = ("AutoETS", "AutoARIMA", "AutoTheta")
#: Lags of the LightGBM anchor (in periods) and its rolling-mean windows over lag 1.
LAGS: tuple[int, ...] = (1, 2, 3, 6, 12)
ROLLING_WINDOWS: tuple[int, ...] = (3, 6, 12)


# --- scores ----------------------------------------------------------------------------------


def wape(actual: np.ndarray, predicted: np.ndarray) -> float:
    """sum |actual - predicted| / sum |actual|; NaN when every actual is 0."""
    denominator = float(np.abs(actual).sum())
    if denominator == 0:
        return float("nan")
    return float(np.abs(actual - predicted).sum()) / denominator


def coverage(actual: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of actuals inside [lower, upper]; a missing bound (NaN) counts as a miss."""
    if actual.size == 0:
        return float("nan")
    inside = (actual >= lower) & (actual <= upper)  # NaN compares False
    return float(inside.mean())


@dataclass(frozen=True)
class Score:
    """A method's holdout WAPE, interval coverage per level (if it gives intervals) and the
    number of held-out cells it had no forecast for (scored as 0)."""

    wape: float
    coverage: dict[int, float]
    missing: int


def score(holdout: pd.DataFrame, forecast: pd.DataFrame) -> Score:
    """Score `forecast` on every held-out cell; a cell without a forecast counts as 0 sold."""
    joined = holdout[["unique_id", "ds", "y"]].merge(forecast, on=["unique_id", "ds"], how="left")
    missing = int(joined["yhat"].isna().sum())
    actual = joined["y"].to_numpy(float)
    found = {
        level: coverage(actual, joined[f"lo_{level}"].to_numpy(float), joined[f"hi_{level}"])
        for level in LEVELS
        if f"lo_{level}" in joined
    }
    return Score(wape(actual, joined["yhat"].fillna(0.0).to_numpy(float)), found, missing)


# --- time and memory -------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """A method's answer, wall time and the peak resident memory of this process and its
    children (the JVM included) while it ran, also as the rise above the level at its start."""

    value: Any
    seconds: float
    peak_mb: float
    added_mb: float


def _resident_mb() -> float:
    """This process tree's resident memory now (one PeakRSS sample)."""
    with PeakRSS(os.getpid(), interval=0.01) as sample:
        time.sleep(0.03)
    return sample.peak_mb


def measure(method: Callable[[], Any]) -> Measured:
    """Run `method()` under a wall clock and a 50 ms memory sampler."""
    before = _resident_mb()
    with PeakRSS(os.getpid(), interval=0.05) as peak:
        start = time.perf_counter()
        value = method()
        seconds = time.perf_counter() - start
    return Measured(value, seconds, peak.peak_mb, max(peak.peak_mb - before, 0.0))


# --- anchors ---------------------------------------------------------------------------------


def _future(
    train: pd.DataFrame, horizon: int, granularity: str, cutoff: pd.Timestamp
) -> pd.DataFrame:
    periods = pd.date_range(cutoff, periods=horizon, freq=FREQ[granularity])
    ids = train["unique_id"].drop_duplicates()
    return pd.DataFrame([(uid, ds) for uid in ids for ds in periods], columns=["unique_id", "ds"])


def seasonal_naive(data: Split, granularity: str, season: int) -> pd.DataFrame:
    """The value one season before each held-out period (repeated for horizons past a season);
    a series shorter than a season repeats its last value."""
    future = _future(data.train, data.horizon, granularity, data.cutoff)
    history = {uid: g["y"].to_numpy() for uid, g in data.train.groupby("unique_id", sort=False)}
    step = future.groupby("unique_id", sort=False).cumcount().to_numpy()
    values = []
    for uid, h in zip(future["unique_id"], step, strict=True):
        y = history[uid]
        values.append(y[-season + h % season] if y.size >= season else y[-1])
    return future.assign(yhat=np.asarray(values, dtype=float))


def statistical(data: Split, granularity: str, season: int, model: str) -> pd.DataFrame:
    """One statsforecast model per series, with its own 80% and 95% intervals."""
    from statsforecast import StatsForecast
    from statsforecast import models as sf_models

    fitted = StatsForecast(
        models=[getattr(sf_models, model)(season_length=season)],
        freq=FREQ[granularity],
        n_jobs=1,  # in-process: the memory sampler sees it, and Spark is idle meanwhile
    )
    out = fitted.forecast(
        df=data.train[["unique_id", "ds", "y"]], h=data.horizon, level=list(LEVELS)
    )
    renamed = {model: "yhat"}
    for level in LEVELS:
        renamed[f"{model}-lo-{level}"] = f"lo_{level}"
        renamed[f"{model}-hi-{level}"] = f"hi_{level}"
    return out.rename(columns=renamed)[["unique_id", "ds", *renamed.values()]]


def lightgbm_lags(data: Split, granularity: str) -> pd.DataFrame:
    """One LightGBM over every series on lags and rolling means; recursive multi-step
    (mlforecast's default: each forecast feeds the next period's lags). Lags longer than a
    series' history leave its first rows out of the training set."""
    import lightgbm as lgb
    from mlforecast import MLForecast
    from mlforecast.lag_transforms import RollingMean

    forecaster = MLForecast(
        models={"lgbm": lgb.LGBMRegressor(random_state=0, verbosity=-1, n_jobs=1)},
        freq=FREQ[granularity],
        lags=list(LAGS),
        lag_transforms={1: [RollingMean(window_size=w) for w in ROLLING_WINDOWS]},
    )
    forecaster.fit(data.train[["unique_id", "ds", "y"]])
    out = forecaster.predict(h=data.horizon)
    return out.rename(columns={"lgbm": "yhat"})[["unique_id", "ds", "yhat"]]


def original_pipeline(spark: SparkSession, train_csv: Path, data: Split) -> pd.DataFrame:
    """The original project's pipeline fitted on the months before the origin, then asked for
    each held-out (store, product, year, month)."""
    from bench.seed_style_job import monthly_sales, read_sales, seed_pipeline

    monthly = monthly_sales(read_sales(spark, str(train_csv))).cache()
    try:
        model = seed_pipeline().fit(monthly)
    finally:
        monthly.unpersist()
    cells = data.holdout[["unique_id", "store_id", "product_id", "ds"]]
    asked = pd.DataFrame(
        {
            "store_id": cells["store_id"],
            "product_id": cells["product_id"],
            "year": cells["ds"].dt.year.astype("int32"),
            "month": cells["ds"].dt.month.astype("int32"),
        }
    )
    predicted = model.transform(spark.createDataFrame(asked)).select(
        "store_id", "product_id", "year", "month", "prediction"
    )
    rows = predicted.toPandas()
    rows["ds"] = pd.to_datetime({"year": rows["year"], "month": rows["month"], "day": 1})
    rows["unique_id"] = rows["store_id"] + "|" + rows["product_id"]
    return rows.rename(columns={"prediction": "yhat"})[["unique_id", "ds", "yhat"]]
