"""Per-series statistical forecasts (statsforecast) as a pure Spark step: the "many models" pattern.

`statistical_forecasts(...)` returns a `DataFrame -> DataFrame` step that groups the history by
(window, store_id, product_id) and, in each group, fits every named model on the periods up to the
window's `origin` and forecasts `horizon` periods after it, with the models' own prediction
intervals. It runs inside Spark's Python workers (`applyInPandas`), so it scales out with the
cluster. `forecast_series` is that per-group function on a pandas frame, testable without Spark.

Rules, so that no series fails the job:
- Periods between a series' first period and the origin without a row sold nothing: filled with 0.
- A series with fewer than 2 x `season` periods is fitted with season 1 (no seasonal terms).
- A series with one period, a model that raises, or one that returns non-finite values gets the
  fallback forecast: seasonal-naive (season 1 on short series), else the last value with no
  interval. Its rows carry `fallback = true`.
- A series with no period at or before the origin has nothing to fit and gets no rows.
- Forecasts and bounds are clipped at 0: demand is never negative.
- "Combination" is the per-step median of the other models' forecasts, and its bounds the medians
  of their bounds (a pragmatic interval, not a calibrated one); it fell back if any part did.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from salesflow.errors import ConfigurationError, InputError

__all__ = [
    "COMBINATION",
    "DEFAULT_STAT_MODELS",
    "INPUT_COLUMNS",
    "STAT_MODELS",
    "StatSpec",
    "forecast_series",
    "output_columns",
    "output_schema",
    "statistical_forecasts",
]

#: The models this step can fit, named as in `statsforecast.models`.
STAT_MODELS: tuple[str, ...] = ("AutoETS", "AutoARIMA", "AutoTheta", "SeasonalNaive")
#: The default list leaves AutoARIMA out: on a 60-month series it takes 313 ms a fit against
#: AutoETS 75, AutoTheta 8, SeasonalNaive 0.5, so 120 series x 4 windows took 164 s with it and
#: 22 s without (local[2] on 2 shared cores, statsforecast 2.1.1, 2026-12-08, 565a046); it won
#: 1 of issue 20's 3 single-origin holdouts.
DEFAULT_STAT_MODELS: tuple[str, ...] = ("AutoETS", "AutoTheta", "SeasonalNaive")
#: The name of the median-of-models row added after the fitted models.
COMBINATION = "Combination"
#: Columns the input frame must have.
INPUT_COLUMNS: tuple[str, ...] = (
    "window",
    "origin",
    "store_id",
    "product_id",
    "period_index",
    "quantity",
)
_GROUP = ["window", "store_id", "product_id"]
#: Partitions per core for the fits. The input is small (AQE would coalesce it into one
#: partition, one core: 7.1 s for 36 fits that take 3.9 s on two partitions) while each group is
#: CPU-heavy and their costs vary, so an explicit count keeps every core busy.
_TASKS_PER_CORE = 2
#: Per-row flag column: false for series over `max_series`, which get the fallback for every model.
_FIT = "__salesflow_fit"


@dataclass(frozen=True)
class StatSpec:
    """What each series gets: the models to fit, the season, the horizon and the interval levels."""

    models: tuple[str, ...]
    season: int
    horizon: int
    levels: tuple[int, ...] = (80, 95)

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in STAT_MODELS]
        if not self.models or unknown:
            raise ConfigurationError(
                f"statistical models must be some of {', '.join(STAT_MODELS)}; "
                f"got {', '.join(self.models) or 'none'}"
            )
        if len(set(self.models)) != len(self.models):
            raise ConfigurationError(f"statistical models are listed twice: {self.models}")
        if self.season < 1 or self.horizon < 1:
            raise ConfigurationError(
                f"season and horizon must be at least 1, got {self.season} and {self.horizon}"
            )
        if not self.levels or any(not 0 < level < 100 for level in self.levels):
            raise ConfigurationError(f"interval levels must be in 1..99, got {self.levels}")


def output_columns(levels: Sequence[int]) -> list[str]:
    """The output's columns in order: keys, model, forecast, a lo_/hi_ pair per level, fallback."""
    bounds = [f"{side}_{level}" for level in levels for side in ("lo", "hi")]
    return [*_GROUP, "period_index", "model", "forecast", *bounds, "fallback"]


def output_schema(levels: Sequence[int]) -> str:
    """The output's Spark schema as a DDL string."""
    types = {"window": "int", "store_id": "string", "product_id": "string"}
    types |= {"period_index": "int", "model": "string", "fallback": "boolean"}
    return ", ".join(f"{c} {types.get(c, 'double')}" for c in output_columns(levels))


class _Model(Protocol):
    """What this module uses of a statsforecast model: fit and forecast in one call."""

    def forecast(self, y: np.ndarray, h: int, level: list[int]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class _Fit:
    """One model's forecast for one series: mean, bounds per level (lo, hi), and whether it fell back."""

    mean: np.ndarray
    bounds: dict[int, tuple[np.ndarray, np.ndarray]]
    fallback: bool


def _history(group: pd.DataFrame) -> tuple[np.ndarray, int]:
    """The series' quantities from its first period to the origin, missing periods as 0; the origin."""
    origin = int(group["origin"].max())
    seen = group[group["period_index"] <= origin]
    if seen.empty:
        return np.zeros(0), origin
    period = seen["period_index"].to_numpy(dtype=np.int64)
    first = int(period.min())
    values = np.zeros(origin - first + 1)
    np.add.at(values, period - first, seen["quantity"].fillna(0.0).to_numpy(dtype=np.float64))
    return values, origin


def _model(name: str, season: int) -> _Model:
    """A statsforecast model by name. Imported here so that only Spark's Python workers pay
    statsforecast's ~1.5 s import, not every driver that imports this module."""
    from statsforecast import models

    model: _Model = getattr(models, name)(season_length=season)
    return model


def _run(model: _Model, y: np.ndarray, spec: StatSpec) -> _Fit:
    """Fit and forecast one model; raises if it fails or returns anything non-finite."""
    with (
        warnings.catch_warnings()
    ):  # numpy/statsmodels warnings on flat series; same under -W error
        warnings.simplefilter("ignore")
        out: dict[str, Any] = model.forecast(y=y, h=spec.horizon, level=list(spec.levels))
    mean = np.asarray(out["mean"], dtype=np.float64)
    bounds = {
        level: (
            np.asarray(out[f"lo-{level}"], dtype=np.float64),
            np.asarray(out[f"hi-{level}"], dtype=np.float64),
        )
        for level in spec.levels
    }
    arrays = [mean, *(b for pair in bounds.values() for b in pair)]
    if any(a.shape != (spec.horizon,) or not np.all(np.isfinite(a)) for a in arrays):
        raise ArithmeticError(f"{type(model).__name__} returned a non-finite forecast")
    return _Fit(mean, bounds, fallback=False)


def _last_value(y: np.ndarray, spec: StatSpec) -> _Fit:
    """The last value for every step, with no interval (nothing to estimate its spread from)."""
    mean = np.full(spec.horizon, y[-1])
    nan = np.full(spec.horizon, np.nan)
    return _Fit(mean, {level: (nan, nan) for level in spec.levels}, fallback=True)


def _fallback(y: np.ndarray, season: int, spec: StatSpec) -> _Fit:
    """Seasonal-naive (with its own intervals) when the series allows it, else the last value."""
    if len(y) < 2:
        return _last_value(y, spec)
    try:
        fit = _run(_model("SeasonalNaive", season), y, spec)
    except Exception:  # a fallback must not fail: the last value always exists
        return _last_value(y, spec)
    return _Fit(fit.mean, fit.bounds, fallback=True)


def _fits(y: np.ndarray, fit_models: bool, spec: StatSpec) -> dict[str, _Fit]:
    """Every model's forecast for one series (fallbacks where a model cannot run), clipped at 0."""
    season = spec.season if len(y) >= 2 * spec.season else 1
    fallback: _Fit | None = None
    fits = {}
    for name in spec.models:
        fit = None
        if fit_models and len(y) >= 2:
            try:
                fit = _run(_model(name, season), y, spec)
            except Exception:  # any model error on any series: counted by `fallback`, not fatal
                fit = None
        if fit is None:
            fallback = fallback or _fallback(y, season, spec)
            fit = fallback
        fits[name] = _clipped(fit)
    return fits


def _clipped(fit: _Fit) -> _Fit:
    bounds = {k: (np.maximum(lo, 0.0), np.maximum(hi, 0.0)) for k, (lo, hi) in fit.bounds.items()}
    return _Fit(np.maximum(fit.mean, 0.0), bounds, fit.fallback)


def _median(fits: Sequence[_Fit], levels: Sequence[int]) -> _Fit:
    """The per-step median of the forecasts, and of each bound (NaN bounds left out)."""
    mean = np.median(np.stack([f.mean for f in fits]), axis=0)
    bounds = {}
    with warnings.catch_warnings():  # an all-NaN step (no model had an interval) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        for level in levels:
            lo = np.nanmedian(np.stack([f.bounds[level][0] for f in fits]), axis=0)
            hi = np.nanmedian(np.stack([f.bounds[level][1] for f in fits]), axis=0)
            bounds[level] = (lo, hi)
    return _Fit(mean, bounds, fallback=any(f.fallback for f in fits))


def forecast_series(group: pd.DataFrame, spec: StatSpec) -> pd.DataFrame:
    """The per-group function: one series' history in one window -> its forecasts per model.

    `group` has the input columns (and optionally the max_series flag); the result has
    `output_columns(spec.levels)`, one row per model (then Combination) and step, in that order.
    """
    columns = output_columns(spec.levels)
    y, origin = _history(group)
    if len(y) == 0:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in columns})
    fit_models = bool(group[_FIT].all()) if _FIT in group.columns else True
    fits = _fits(y, fit_models, spec)
    fits[COMBINATION] = _median(list(fits.values()), spec.levels)
    h = spec.horizon
    first = group.iloc[0]
    frame: dict[str, Any] = {
        "window": np.full(h * len(fits), int(first["window"]), dtype=np.int32),
        "store_id": [str(first["store_id"])] * (h * len(fits)),
        "product_id": [str(first["product_id"])] * (h * len(fits)),
        "period_index": np.tile(np.arange(origin + 1, origin + h + 1, dtype=np.int32), len(fits)),
        "model": np.repeat(list(fits), h),
        "forecast": np.concatenate([f.mean for f in fits.values()]),
    }
    for level in spec.levels:
        frame[f"lo_{level}"] = np.concatenate([f.bounds[level][0] for f in fits.values()])
        frame[f"hi_{level}"] = np.concatenate([f.bounds[level][1] for f in fits.values()])
    frame["fallback"] = np.repeat([f.fallback for f in fits.values()], h)
    return pd.DataFrame(frame, columns=columns)


def _dtype(column: str) -> str:
    kinds = {"window": "int32", "period_index": "int32", "fallback": "bool"}
    return kinds.get(
        column, "object" if column in ("store_id", "product_id", "model") else "float64"
    )


def _check_columns(df: DataFrame) -> None:
    missing = [c for c in INPUT_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            f"statistical forecasts need column(s) {', '.join(missing)}; "
            f"the frame has {', '.join(df.columns)}"
        )


def _flag_fitted(df: DataFrame, max_series: int) -> DataFrame:
    """Mark the `max_series` best-selling series of each window (up to its origin) for fitting.

    Ties are broken by the ids, so the same input marks the same series.
    """
    volume = (
        df.where(F.col("period_index") <= F.col("origin"))
        .groupBy(*_GROUP)
        .agg(F.sum("quantity").alias("__salesflow_volume"))
    )
    order = Window.partitionBy("window").orderBy(
        F.col("__salesflow_volume").desc_nulls_last(), "store_id", "product_id"
    )
    ranked = volume.select(*_GROUP, (F.row_number().over(order) <= max_series).alias(_FIT))
    return df.join(ranked, on=_GROUP, how="left").fillna(False, subset=[_FIT])


def statistical_forecasts(
    models: Sequence[str],
    season: int,
    horizon: int,
    levels: Sequence[int] = (80, 95),
    max_series: int | None = None,
) -> Callable[[DataFrame], DataFrame]:
    """A step: history (INPUT_COLUMNS) -> per-series forecasts of each model (output_columns).

    `max_series` bounds the cost: only that many best-selling series per window are fitted; the
    others get the seasonal-naive fallback under every model name (`fallback = true`).
    """
    spec = StatSpec(tuple(models), season, horizon, tuple(levels))
    if max_series is not None and max_series < 0:
        raise ConfigurationError(f"max_series must be at least 0, got {max_series}")
    schema = output_schema(spec.levels)

    def per_group(group: pd.DataFrame) -> pd.DataFrame:
        return forecast_series(group, spec)

    def step(df: DataFrame) -> DataFrame:
        _check_columns(df)
        history = df.select(
            F.col("window").cast("int"),
            F.col("origin").cast("int"),
            "store_id",
            "product_id",
            F.col("period_index").cast("int"),
            F.col("quantity").cast("double"),
        )
        if max_series is not None:
            history = _flag_fitted(history, max_series)
        tasks = df.sparkSession.sparkContext.defaultParallelism * _TASKS_PER_CORE
        history = history.repartition(tasks, *_GROUP)  # a repartition AQE does not coalesce
        return history.groupBy(*_GROUP).applyInPandas(per_group, schema)

    return step
