"""The models a training lets compete, and the contest that picks one by backtest WAPE.

Pipeline candidates are MLlib forests refitted at each backtest window like the default one:
`forest` (the settings' regressor, trees and depth, every feature at each split) and `original`
(the original project's pipeline: the same indexers and assembler, a random forest with Spark's
defaults: 20 trees of depth 5, "auto" feature subsets). Every candidate is scored on the same
windows and rows (`salesflow.spark.competition`); the winner's parameters are the version's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from salesflow.config import Settings
from salesflow.spark import backtest, competition
from salesflow.spark.backtest import Backtest, FitTransform, Prepared
from salesflow.spark.competition import Entry
from salesflow.spark.pipeline import HistoryShape, pipeline_parameters
from salesflow.spark.statistical import (
    COMBINATION,
    DEFAULT_STAT_MODELS,
    INPUT_COLUMNS,
    STAT_MODELS,
    statistical_forecasts,
)
from salesflow.spark.transforms import SEASON

#: The statistical models' season per granularity: a year of months; a week of days (their
#: seasonal terms cannot span the 364 days the backtest's seasonal-naive reference looks back).
STAT_SEASON = {"month": SEASON, "day": 7}

__all__ = [
    "PIPELINES",
    "STAT_SEASON",
    "Contest",
    "contest",
    "final_forecasts",
    "final_models",
    "horizon_periods",
    "pipeline_candidate",
    "window_forecasts",
]

#: Candidates that are MLlib pipelines (the rest are per-series statistical models).
PIPELINES = ("forest", "original")
#: The original project's regressor: Spark's RandomForestRegressor defaults.
_ORIGINAL = {
    "regressor": "random_forest",
    "numTrees": 20,
    "maxDepth": 5,
    "featureSubsetStrategy": "auto",
}


def pipeline_candidate(
    name: str, settings: Settings, shape: HistoryShape, granularity: str
) -> dict[str, Any]:
    """The recorded parameters of pipeline candidate `name` for a history of this shape."""
    params = pipeline_parameters(settings, shape.stores, shape.products, granularity)
    if name == "original":
        return {**params, **_ORIGINAL, "candidate": "original"}
    if name == "forest":
        return {**params, "candidate": "forest"}
    raise ValueError(f"{name!r} is not a pipeline candidate; those are {', '.join(PIPELINES)}")


@dataclass(frozen=True)
class Contest:
    """The competition's outcome: the leaderboard, the winner and what the version needs of it."""

    entries: list[Entry]
    winner: Entry
    backtest: Backtest  # the winner's scored backtest rows (summary, holdout, intervals)
    params: dict[str, Any]  # the winner's pipeline parameters (or the forest's, for a table)
    backtests: dict[str, Backtest] = field(default_factory=dict)  # every candidate's, by name
    skipped: str | None = None  # why the statistical candidates did not compete, if they did not
    #: A statistical winner's interval calibration (`competition.calibrate`), else empty.
    calibration: dict[str, Any] = field(default_factory=dict)

    def served(self, name: str) -> Backtest | None:
        """Candidate `name`'s backtest as a version of it answers: a statistical model's rows
        without a forecast (series new in a window) answered by the first pipeline."""
        if name not in self.backtests:
            return None
        base = next(iter(self.backtests.values()))  # the first pipeline: always scored first
        found = self.backtests[name]
        return dataclasses.replace(
            found, model=np.where(np.isfinite(found.model), found.model, base.model)
        )

    def to_dict(self) -> dict[str, Any]:
        """What the version's metadata records (key "competition")."""
        return {
            "winner": self.winner.name,
            "kind": self.winner.kind,
            "why": (
                f"lowest backtest WAPE of {len(self.entries)} candidates on the "
                f"{self.winner.rows} rows every candidate forecast"
                if len(self.entries) > 1
                else "the only candidate"
            ),
            "leaderboard": [e.to_dict() for e in self.entries],
            "statistical_skipped": self.skipped,
            "intervals": self.calibration or None,
        }


def contest(
    settings: Settings,
    prepared: Prepared,
    shape: HistoryShape,
    granularity: str,
    fit_transform: FitTransform | None = None,
) -> Contest:
    """Backtest every configured candidate on the same windows; keep the best.

    Pipelines are refitted at each window; the statistical models are fitted per series at each
    window's origin (histories with at most `statistical_max_series` series; past that the
    pipelines compete alone and the leaderboard says why)."""
    names: list[str] = [c for c in settings.candidates if c in PIPELINES] or ["forest"]
    params = {n: pipeline_candidate(n, settings, shape, granularity) for n in names}
    scored: dict[str, tuple[str, Backtest]] = {
        n: ("pipeline", backtest.run(prepared, params[n], fit_transform)) for n in names
    }
    wanted: list[str] = [c for c in settings.candidates if c not in PIPELINES]
    skipped = _why_not_statistical(settings, shape, granularity, prepared) if wanted else None
    bounds: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    if wanted and skipped is None:
        base = scored[names[0]][1]
        forecasts = window_forecasts(settings, prepared, wanted, granularity)
        for name in wanted:
            scored[name] = ("statistical", competition.aligned(base, forecasts, name))
            bounds[name] = competition.aligned_bounds(
                base, forecasts, name, settings.interval_levels
            )
    entries = competition.leaderboard(scored)
    best = competition.winner(entries)
    outcome = Contest(
        entries,
        best,
        scored[best.name][1],
        params.get(best.name, params[names[0]]),
        {name: bt for name, (_, bt) in scored.items()},
        skipped,
    )
    chosen = outcome.served(best.name)
    assert chosen is not None
    found = bounds.get(best.name)
    calibration = competition.calibrate(chosen, found) if found else {}
    return dataclasses.replace(outcome, backtest=chosen, calibration=calibration)


def _why_not_statistical(
    settings: Settings, shape: HistoryShape, granularity: str, prepared: Prepared
) -> str | None:
    """Why the statistical candidates sit this contest out, or None when they compete."""
    series = shape.stores * shape.products
    if granularity not in STAT_SEASON:
        return f"no statistical season for {granularity} models"
    if not prepared.windows:
        return "no backtest windows"
    if series > settings.statistical_max_series:
        return f"up to {series} series > statistical_max_series {settings.statistical_max_series}"
    return None


def _models(names: Sequence[str]) -> list[str]:
    """The statsforecast models to fit for these candidates (Combination needs the defaults)."""
    fitted = [n for n in names if n in STAT_MODELS]
    if COMBINATION in names:
        fitted += [m for m in DEFAULT_STAT_MODELS if m not in fitted]
    return fitted


def final_models(settings: Settings, name: str) -> list[str]:
    """The models to fit for winner `name`'s forecast table: a Combination is the median of the
    same models it was backtested with (every configured statistical candidate)."""
    if name != COMBINATION:
        return _models([name])
    return _models([c for c in settings.candidates if c not in PIPELINES])


def horizon_periods(settings: Settings, granularity: str) -> int:
    """The periods a statistical winner's forecast table covers: months, or days for day models."""
    return settings.forecast_horizon_days if granularity == "day" else settings.forecast_horizon


def _levels(settings: Settings) -> list[int]:
    return [round(level * 100) for level in settings.interval_levels]


def window_forecasts(
    settings: Settings, prepared: Prepared, names: Sequence[str], granularity: str = "month"
) -> pa.Table:
    """Each statistical candidate's forecasts of each backtest window, fitted at its origin."""
    spark = prepared.history.sparkSession
    origins = spark.createDataFrame(
        [(i, w.origin) for i, w in enumerate(prepared.windows)], "window int, origin int"
    )
    history = prepared.history.join(
        F.broadcast(origins), F.col("period_index") <= F.col("origin")
    ).select(*INPUT_COLUMNS)
    horizon = max(len(w.months) for w in prepared.windows)
    season = STAT_SEASON[granularity]
    step = statistical_forecasts(_models(names), season, horizon, _levels(settings))
    return history.transform(step).toArrow()


def final_forecasts(
    settings: Settings,
    history: DataFrame,
    last_index: int,
    name: str,
    factors: dict[str, float | None],
    granularity: str = "month",
) -> pa.Table:
    """Candidate `name`'s forecasts of the periods after the history (`horizon_periods`), in
    the forecast table's columns (`salesflow.serving.table`), its own intervals scaled by the
    backtest's calibration `factors` per level ("0.8": factor; None: no bound)."""
    frame = history.select(
        F.lit(0).alias("window"),
        F.lit(last_index).alias("origin"),
        "store_id",
        "product_id",
        "period_index",
        "quantity",
    )
    levels = _levels(settings)
    step = statistical_forecasts(
        final_models(settings, name),
        STAT_SEASON[granularity],
        horizon_periods(settings, granularity),
        levels,
    )
    forecast = F.col("forecast")
    bounds: list[Column] = []
    for level, key in zip(levels, settings.interval_levels, strict=True):
        factor = factors.get(str(key))
        half = F.col(f"hi_{level}") - forecast
        if factor is None:
            bounds += [F.lit(None).cast("double").alias(f"{side}_{level}") for side in ("lo", "hi")]
            continue
        bounds += [
            F.greatest(forecast - F.lit(factor) * half, F.lit(0.0)).alias(f"lo_{level}"),
            (forecast + F.lit(factor) * half).alias(f"hi_{level}"),
        ]
    chosen = frame.transform(step).filter(F.col("model") == name)
    return chosen.select(
        "store_id", "product_id", "period_index", forecast.alias("predicted_quantity"), *bounds
    ).toArrow()
