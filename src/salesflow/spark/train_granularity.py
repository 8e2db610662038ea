"""One granularity's part of a training run, in named steps: read -> backtest and gate -> fit -> publish.

`salesflow.spark.train` curates the files once, then calls `train_granularity` for each
granularity it trains (month, then day). Day histories are zero-filled within each series' span
(`transforms.fill_missing_days`) and, when the month model of the same run is given, the day
model records the coherence of its daily forecasts with the monthly ones (spark/coherence.py).
The final model does not depend on the backtest: it is fitted and saved in its own thread while
the backtest's refits run, into the staged folder that becomes the version. An error in either
ends the run; nothing is published.
"""

from __future__ import annotations

import logging
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.util import inheritable_thread_target

from salesflow import faults
from salesflow.errors import InputError
from salesflow.registry import ModelVersion
from salesflow.sales import ledger
from salesflow.serving.table import TABLE_FILE, write_table
from salesflow.spark import backtest, candidates, scoring
from salesflow.spark.candidates import (
    PIPELINES,
    Contest,
    final_forecasts,
    horizon_periods,
    pipeline_candidate,
)
from salesflow.spark.coherence import coherence
from salesflow.spark.curated import read_history
from salesflow.spark.pipeline import (
    HistoryShape,
    evaluate,
    feature_importances,
    period_indexer,
    pipeline_from_parameters,
)
from salesflow.spark.predict import model_labels
from salesflow.spark.promotion import gate
from salesflow.spark.train_context import SourceStats, TrainResult, TrainRun
from salesflow.spark.transforms import fill_missing_days, with_day_features

__all__ = ["Fitted", "train_granularity"]

log = logging.getLogger(__name__)

#: date.toordinal() of 1970-01-01: day indexes (days since then) back to dates.
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@dataclass
class Fitted:
    """What one granularity's run leaves for the next: its fitted model and version."""

    model: PipelineModel
    version: str


@dataclass(frozen=True)
class History:
    """The read step's output: one granularity's whole curated history and its shape."""

    grain: str
    root: Path
    frame: DataFrame  # monthly or daily totals (days zero-filled, with day features)
    shape: HistoryShape
    filled_cells: int | None  # day histories: days without sales added as zeros


@dataclass(frozen=True)
class Evaluation:
    """The backtest-and-gate step's output: what the candidate scored and what the gate said."""

    summary: dict[str, Any]  # scoring.summary of the backtest windows
    metrics: dict[str, Any]  # the holdout metrics
    intervals: dict[str, Any]  # split-conformal half-widths per level
    promotion: dict[str, Any]  # the gate's record
    active: ModelVersion | None  # the active version the gate compared against
    contest: Contest  # the candidates' leaderboard and the winner


def train_granularity(
    run: TrainRun, grain: str, sources: list[SourceStats], month: Fitted | None
) -> tuple[TrainResult, Fitted]:
    """Backtest, gate, fit and publish one granularity's model from its curated history."""
    started = time.perf_counter()
    history = read(run, grain)
    # The first configured pipeline candidate is fitted on everything while the contest runs:
    # it is the final model unless another candidate wins, which is then fitted after it.
    first = next((c for c in run.settings.candidates if c in PIPELINES), "forest")
    guess = pipeline_candidate(first, run.settings, history.shape, grain)
    fit_and_save = inheritable_thread_target(run.spark)(_fit_and_save)
    with run.registry.staging() as staged, ThreadPoolExecutor(max_workers=1) as pool:
        final: Future[PipelineModel] = pool.submit(
            fit_and_save, run, history, guess, staged / "pipeline"
        )
        with run.timed("evaluate"):
            evaluation = backtest_and_gate(run, history)
        with run.timed("fit"):  # what the final fit and save took beyond the backtest
            run.say(f"fitting the final {grain} model on all data")
            chosen = _final(run, history, evaluation.contest, final.result(), guess, staged)
        model = chosen.model
        with run.timed("save"):
            metadata = describe(run, history, evaluation, chosen, sources, month)
            faults.reached(run.settings, "train.before_publish", run.spark)
            published = publish(run, staged, metadata, evaluation, sources)
    result = _result(run, history, evaluation, metadata, published, sources, started)
    log.info(
        "trained %s model %s in %.1f s (%s: %s): %s",
        grain,
        result.version,
        result.duration_s,
        "active" if result.promoted else "candidate",
        result.promotion["reason"],
        result.metrics,
    )
    return result, Fitted(model, published.version)


def read(run: TrainRun, grain: str) -> History:
    """The granularity's whole curated history (days zero-filled) and its shape."""
    root = run.grain_root(grain)
    with run.timed("read_clean_aggregate"):
        frame = read_history(run.spark, root, grain)
        filled: int | None = None
        if grain == "day":
            run.say("filling days without sales with zeros")
            frame, filled = _day_history(frame)
        shape = HistoryShape.of(frame, grain)
    if shape.rows == 0:
        raise InputError("no accepted rows to train on")
    return History(grain, root, frame, shape, filled)


def _day_history(history: DataFrame) -> tuple[DataFrame, int]:
    """Daily totals zero-filled within each series' span, with the day features; filled count."""
    filled = history.transform(fill_missing_days).localCheckpoint()
    count = filled.filter(F.col("filled")).count()
    return filled.drop("filled").transform(with_day_features).localCheckpoint(), count


def _fit_and_save(
    run: TrainRun,
    history: History,
    params: dict[str, Any],
    folder: Path,
) -> PipelineModel:
    """The pipeline of `params` fitted on the whole history and saved to `folder` ("final_fit").

    With the history as it is, the indexers are built from the shape's labels instead of
    fitted; a frame altered by `fit_transform` (tests) is fitted in full."""
    altered = run.options.fit_transform
    frame = history.frame
    labels = history.shape.labels
    if altered is not None:
        frame, labels = altered(frame.transform(period_indexer(history.grain))), None
    with run.timed("final_fit"):
        model = pipeline_from_parameters(params, labels).fit(frame)
        model.write().save(str(folder))
    return model


def backtest_and_gate(run: TrainRun, history: History) -> Evaluation:
    """The contest of candidates on the rolling-origin backtest, the winner's holdout metrics
    and intervals, and the promotion gate."""
    settings, shape, altered = run.settings, history.shape, run.options.fit_transform
    windows, horizon = settings.backtest_windows, settings.backtest_horizon
    run.say(
        f"backtesting {windows} windows of {horizon} months ({history.grain} model), "
        "fitting the final model alongside"
    )
    prepared = backtest.prepare(history.frame, shape, windows, horizon)
    contest = candidates.contest(settings, prepared, shape, history.grain, altered)
    scored, params = contest.backtest, contest.params
    summary = scoring.summary(scored, horizon=horizon)
    metrics = scoring.holdout_metrics(scored, settings.holdout_months, horizon)
    if metrics is None and history.grain == "day":
        metrics = _no_day_holdout(settings.holdout_months, horizon)
    elif metrics is None:  # the holdout is not made of whole windows: one more fit
        run.say(f"evaluating on the last {settings.holdout_months} months")
        metrics = evaluate(history.frame, settings, shape, altered, params)
    active = run.registry.active(history.grain)
    promotion = gate(
        settings,
        active,
        prepared,
        shape,
        params,
        summary,
        sorted(ledger.load(history.root.parent).folders(history.grain)),
        force=run.options.force,
        activate=run.options.activate,
        exact=altered is None,
        say=run.say,
        contest=contest,
    )
    intervals = scoring.intervals(scored, settings.interval_levels)
    return Evaluation(summary, metrics, intervals, promotion, active, contest)


@dataclass(frozen=True)
class Final:
    """The fit step's output: the pipeline fitted on everything, and the winner's forecast
    table when the winner is a statistical model (its metadata block)."""

    model: PipelineModel
    params: dict[str, Any]
    table: dict[str, Any] | None


def _final(
    run: TrainRun,
    history: History,
    contest: Contest,
    fitted: PipelineModel,
    guess: dict[str, Any],
    staged: Path,
) -> Final:
    """The winner on all data: the pipeline fitted alongside the contest unless another
    pipeline won (then fitted now); a statistical winner's forecast table written beside it."""
    winner, params = contest.winner, contest.params
    if params != guess:
        run.say(f"{winner.name} won: fitting it on all data")
        shutil.rmtree(staged / "pipeline")
        fitted = _fit_and_save(run, history, params, staged / "pipeline")
    table = None
    if winner.kind == "statistical" and history.shape.last_index is not None:
        periods = horizon_periods(run.settings, history.grain)
        unit = "days" if history.grain == "day" else "months"
        run.say(f"{winner.name} won: forecasting {periods} {unit} of every series")
        indexed = history.frame.transform(period_indexer(history.grain))
        factors = contest.calibration.get("factors") or {}
        rows = final_forecasts(
            run.settings, indexed, history.shape.last_index, winner.name, factors, history.grain
        )
        table = write_table(staged / TABLE_FILE, rows, model=winner.name).to_dict()
    return Final(fitted, params, table)


def describe(
    run: TrainRun,
    history: History,
    evaluation: Evaluation,
    final: Final,
    sources: list[SourceStats],
    month: Fitted | None,
) -> dict[str, Any]:
    """What the version records: inputs, data seen, parameters, metrics, labels, checks."""
    shape, model, params = history.shape, final.model, final.params
    extra: dict[str, Any] = {
        "backtest": evaluation.summary,
        "intervals": evaluation.intervals,
        "fallback": shape.fallback,
        "promotion": evaluation.promotion,
        "competition": evaluation.contest.to_dict(),
    }
    if final.table is not None:
        extra["forecast_table"] = final.table
    if history.filled_cells is not None:
        extra["filled_cells"] = history.filled_cells
    if history.grain == "day" and month is not None and shape.last_index is not None:
        run.say("checking the daily forecasts against the monthly ones")
        stores, products = model_labels(model)
        extra["coherence"] = coherence(
            run.spark,
            month.model,
            model,
            stores,
            products,
            date.fromordinal(_EPOCH_ORDINAL + shape.last_index),
            run.settings.backtest_horizon,
            month_version=month.version,
        )
    run.say("saving the model")
    stores, products = model_labels(model)
    # every upload in the history the model was fitted on
    every = [e for e in ledger.load(history.root.parent).live() if history.grain in e.parts]
    firsts = [e.first_date for e in every if e.first_date]
    lasts = [e.last_date for e in every if e.last_date]
    by_reason: dict[str, int] = {}
    for source in sources:
        for reason, count in source.rejects_by_reason.items():
            by_reason[reason] = by_reason.get(reason, 0) + count
    return {
        "inputs": [
            {"url": s.url, "sha256": s.sha256, "upload_id": s.upload_id, "appended": s.appended}
            for s in sources
        ],
        "rows_read": sum(s.rows_read for s in sources),
        "rows_rejected": sum(s.rows_rejected for s in sources),
        "rejects_by_reason": by_reason,
        "rows_aggregated": shape.rows,
        "date_range": {"first": min(firsts), "last": max(lasts)} if firsts and lasts else None,
        "parameters": params,
        "metrics": evaluation.metrics,
        "spark_version": run.spark.version,
        "training_sources": sorted(e.parts[history.grain] for e in every),
        "trained_on": {
            "uploads": len(every),
            "upload_ids": [e.id for e in every],
            "rows": sum(e.rows for e in every),  # per store, product and day
        },
        "stores": stores,
        "products": products,
        "granularity": history.grain,
        "feature_importances": feature_importances(model),
        **extra,
    }


def publish(
    run: TrainRun,
    staged: Path,
    metadata: dict[str, Any],
    evaluation: Evaluation,
    sources: list[SourceStats],
) -> ModelVersion:
    """Publish the staged folder as the next version, active when the gate says so."""
    trained_on = "trained on " + (", ".join(s.url for s in sources) or "the curated history")
    return run.registry.publish(
        staged,
        metadata,
        activate=evaluation.promotion["promoted"],
        reason=f"{evaluation.promotion['reason']}; {trained_on}",
        actor=run.options.actor,
        expected_active=evaluation.active.version if evaluation.active else None,
    )


def _result(
    run: TrainRun,
    history: History,
    evaluation: Evaluation,
    metadata: dict[str, Any],
    published: ModelVersion,
    sources: list[SourceStats],
    started: float,
) -> TrainResult:
    return TrainResult(
        version=published.version,
        metrics=evaluation.metrics,
        rows_read=metadata["rows_read"],
        rows_rejected=metadata["rows_rejected"],
        rejects_by_reason=metadata["rejects_by_reason"],
        rejects_url=next((s.rejects_url for s in sources if s.rejects_url), None),
        rows_aggregated=history.shape.rows,
        date_range=metadata["date_range"],
        inputs=[s.to_dict() for s in sources],
        duration_s=round(time.perf_counter() - started, 3),
        timings=run.timings,
        promoted=published.active,
        promotion=published.metadata.get("promotion", evaluation.promotion),
        granularity=history.grain,
        filled_cells=history.filled_cells,
        coherence=(metadata.get("coherence") or {}).get("summary"),
    )


def _no_day_holdout(holdout_months: int, horizon: int) -> dict[str, Any]:
    """Day models' holdout when whole backtest windows do not cover it: not computed, and why."""
    empty = {"rmse": None, "mae": None, "wape": None}
    return {
        "model": dict(empty),
        "baseline": dict(empty),
        "holdout_months": holdout_months,
        "holdout_rows": 0,
        "holdout_rows_total": 0,
        "method": f"not computed: holdout_months {holdout_months} is not a whole number "
        f"of backtest windows of {horizon} months (see backtest)",
    }
