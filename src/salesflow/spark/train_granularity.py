"""One granularity's part of a training run: backtest, gate, fit and publish a model version.

`salesflow.spark.train` reads and curates the files once, then calls `train_granularity` for each
granularity it trains (month, then day). Day histories are zero-filled within each series' span
(`transforms.fill_missing_days`) and, when the month model of the same run is given, the day
model records the coherence of its daily forecasts with the monthly ones (spark/coherence.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.util import inheritable_thread_target

from salesflow import faults
from salesflow.config import Settings
from salesflow.errors import InputError
from salesflow.registry import ModelRegistry
from salesflow.spark import backtest, scoring
from salesflow.spark.coherence import coherence
from salesflow.spark.curated import manifests, read_history
from salesflow.spark.pipeline import (
    HistoryShape,
    evaluate,
    feature_importances,
    period_indexer,
    pipeline_from_parameters,
    pipeline_parameters,
)
from salesflow.spark.predict import model_labels
from salesflow.spark.promotion import gate
from salesflow.spark.transforms import fill_missing_days, with_day_features

__all__ = ["Fitted", "Progress", "TrainResult", "timed", "train_granularity"]

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
#: date.toordinal() of 1970-01-01: day indexes (days since then) back to dates.
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@dataclass
class TrainResult:
    """What a training run produced and measured."""

    version: str
    metrics: dict[str, Any]
    rows_read: int
    rows_rejected: int
    rejects_by_reason: dict[str, int]
    rejects_url: str | None
    rows_aggregated: int
    date_range: dict[str, str] | None
    inputs: list[dict[str, Any]]
    duration_s: float
    timings: dict[str, float] = field(default_factory=dict)
    promoted: bool = True  # the new version is the active one
    promotion: dict[str, Any] = field(default_factory=dict)  # the gate's record (metadata key)
    granularity: str = "month"
    filled_cells: int | None = None  # day models: days with no sales added as zeros
    coherence: dict[str, Any] | None = None  # day models trained with a month model: the summary
    also: list[dict[str, Any]] = field(default_factory=list)  # `both`: the day run's result

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = round(timings.get(stage, 0.0) + time.perf_counter() - start, 3)


def _metadata(
    spark: SparkSession,
    settings: Settings,
    model: PipelineModel,
    shape: HistoryShape,
    metrics: dict[str, Any],
    input_stats: list[dict[str, Any]],
    root: Path,
    extra: dict[str, Any],
    granularity: str = "month",
) -> dict[str, Any]:
    """What a model version records: inputs, data seen, parameters, metrics, labels, `extra`."""
    sources = manifests(root)  # every source in the history the model was fitted on
    firsts = [m["first_date"] for m in sources if m.get("first_date")]
    lasts = [m["last_date"] for m in sources if m.get("last_date")]
    by_reason: dict[str, int] = {}
    for stats in input_stats:
        for reason, count in stats["rejects_by_reason"].items():
            by_reason[reason] = by_reason.get(reason, 0) + count
    stores, products = model_labels(model)
    return {
        "inputs": [
            {k: s.get(k) for k in ("url", "sha256", "upload_id", "appended")} for s in input_stats
        ],
        "rows_read": sum(s["rows_read"] for s in input_stats),
        "rows_rejected": sum(s["rows_rejected"] for s in input_stats),
        "rejects_by_reason": by_reason,
        "rows_aggregated": shape.rows,
        "date_range": {"first": min(firsts), "last": max(lasts)} if firsts and lasts else None,
        "parameters": pipeline_parameters(settings, shape.stores, shape.products, granularity),
        "metrics": metrics,
        "spark_version": spark.version,
        "training_sources": sorted(m["sha256"] for m in sources),
        "stores": stores,
        "products": products,
        "granularity": granularity,
        "feature_importances": feature_importances(model),
        **extra,
    }


@dataclass
class Fitted:
    """What one granularity's run leaves for the next: its fitted model and version."""

    model: PipelineModel
    version: str


def _day_history(history: DataFrame) -> tuple[DataFrame, int]:
    """Daily totals zero-filled within each series' span, with the day features; filled count."""
    filled = history.transform(fill_missing_days).localCheckpoint()
    count = filled.filter(F.col("filled")).count()
    return filled.drop("filled").transform(with_day_features).localCheckpoint(), count


def _fit_and_save(
    params: dict[str, Any],
    frame: DataFrame,
    labels: tuple[list[str], list[str]] | None,
    folder: Path,
    timings: dict[str, float],
) -> PipelineModel:
    """The pipeline of `params` fitted on `frame` and saved to `folder` (timing "final_fit").
    `labels`: the frame's store and product labels (the indexers are then built, not fitted)."""
    with timed(timings, "final_fit"):
        model = pipeline_from_parameters(params, labels).fit(frame)
        model.write().save(str(folder))
    return model


def train_granularity(
    spark: SparkSession,
    settings: Settings,
    grain: str,
    root: Path,
    input_stats: list[dict[str, Any]],
    registry: ModelRegistry,
    say: Progress,
    timings: dict[str, float],
    *,
    actor: str,
    activate: bool,
    force: bool,
    fit_transform: backtest.FitTransform | None,
    month: Fitted | None,
) -> tuple[TrainResult, Fitted]:
    """Backtest, gate, fit and publish one granularity's model from its curated history."""
    started = time.perf_counter()
    filled_cells: int | None = None
    with timed(timings, "read_clean_aggregate"):
        history = read_history(spark, root, grain)
        if grain == "day":
            say("filling days without sales with zeros")
            history, filled_cells = _day_history(history)
        shape = HistoryShape.of(history, grain)
        if shape.rows == 0:
            raise InputError("no accepted rows to train on")

    params = pipeline_parameters(settings, shape.stores, shape.products, grain)
    frame = (
        history
        if fit_transform is None
        else fit_transform(history.transform(period_indexer(grain)))
    )
    # The final model does not depend on the backtest: it is fitted and saved in its own thread
    # while the backtest's refits run (warm 20k-row runs: 7.0-8.2 s -> 5.9-7.5 s), into the staged
    # folder that becomes the version. An error in either ends the run; nothing is published.
    fit_and_save = inheritable_thread_target(spark)(_fit_and_save)
    with registry.staging() as staged, ThreadPoolExecutor(max_workers=1) as final_pool:
        labels = shape.labels if fit_transform is None else None  # an altered frame: fitted
        final = final_pool.submit(fit_and_save, params, frame, labels, staged / "pipeline", timings)
        with timed(timings, "evaluate"):
            windows, horizon = settings.backtest_windows, settings.backtest_horizon
            say(
                f"backtesting {windows} windows of {horizon} months ({grain} model), "
                "fitting the final model alongside"
            )
            prepared = backtest.prepare(history, shape, windows, horizon)
            scored = backtest.run(prepared, params, fit_transform)
            summary = scoring.summary(scored, horizon=horizon)
            metrics = scoring.holdout_metrics(scored, settings.holdout_months, horizon)
            if metrics is None and grain == "day":
                metrics = _no_day_holdout(settings)
            elif metrics is None:  # the holdout is not made of whole windows: one more fit
                say(f"evaluating on the last {settings.holdout_months} months")
                metrics = evaluate(history, settings, shape, fit_transform)
            active = registry.active(grain)
            sources = sorted(m["sha256"] for m in manifests(root))
            promotion = gate(
                settings,
                active,
                prepared,
                shape,
                params,
                summary,
                sources,
                force=force,
                activate=activate,
                exact=fit_transform is None,
                say=say,
            )
        with timed(timings, "fit"):  # what the final fit and save took beyond the backtest
            say(f"fitting the final {grain} model on all data")
            model = final.result()
        with timed(timings, "save"):
            extra: dict[str, Any] = {
                "backtest": summary,
                "intervals": scoring.intervals(scored, settings.interval_levels),
                "fallback": shape.fallback,
                "promotion": promotion,
            }
            if filled_cells is not None:
                extra["filled_cells"] = filled_cells
            if grain == "day" and month is not None and shape.last_index is not None:
                say("checking the daily forecasts against the monthly ones")
                stores, products = model_labels(model)
                extra["coherence"] = coherence(
                    spark,
                    month.model,
                    model,
                    stores,
                    products,
                    date.fromordinal(_EPOCH_ORDINAL + shape.last_index),
                    settings.backtest_horizon,
                    month_version=month.version,
                )
            say("saving the model")
            metadata = _metadata(
                spark, settings, model, shape, metrics, input_stats, root, extra, grain
            )
            faults.reached(settings, "train.before_publish", spark)
            trained_on = "trained on " + ", ".join(s["url"] for s in input_stats)
            published = registry.publish(
                staged,
                metadata,
                activate=promotion["promoted"],
                reason=f"{promotion['reason']}; {trained_on}",
                actor=actor,
                expected_active=active.version if active else None,
            )
    result = TrainResult(
        version=published.version,
        metrics=metrics,
        rows_read=metadata["rows_read"],
        rows_rejected=metadata["rows_rejected"],
        rejects_by_reason=metadata["rejects_by_reason"],
        rejects_url=next((s["rejects_url"] for s in input_stats if s.get("rejects_url")), None),
        rows_aggregated=shape.rows,
        date_range=metadata["date_range"],
        inputs=input_stats,
        duration_s=round(time.perf_counter() - started, 3),
        timings=timings,
        promoted=published.active,
        promotion=published.metadata.get("promotion", promotion),
        granularity=grain,
        filled_cells=filled_cells,
        coherence=(metadata.get("coherence") or {}).get("summary"),
    )
    log.info(
        "trained %s model %s in %.1f s (%s: %s): %s",
        grain,
        result.version,
        result.duration_s,
        "active" if result.promoted else "candidate",
        result.promotion["reason"],
        metrics,
    )
    return result, Fitted(model, published.version)


def _no_day_holdout(settings: Settings) -> dict[str, Any]:
    """Day models' holdout when whole backtest windows do not cover it: not computed, and why."""
    empty = {"rmse": None, "mae": None, "wape": None}
    return {
        "model": dict(empty),
        "baseline": dict(empty),
        "holdout_months": settings.holdout_months,
        "holdout_rows": 0,
        "holdout_rows_total": 0,
        "method": f"not computed: holdout_months {settings.holdout_months} is not a whole number "
        f"of backtest windows of {settings.backtest_horizon} months (see backtest)",
    }
