"""What the job server's workers run: the engine (session, training, prediction) and its predictors.

The Spark work is injected through a `SparkEngine`, so the runner and the routes can be tested with
plain functions; `spark_engine` builds the real one on the process's warm session. Small
synchronous predictions use `predict_now` (the real engine's is in-process, no Spark).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from salesflow.config import Settings
from salesflow.registry import ModelRegistry
from salesflow.sales import names
from salesflow.serving.model import LINEAGE_COLUMNS
from salesflow.serving.predict_csv import predict_csv
from salesflow.serving.service import ForecastService
from salesflow.spark import predict as spark_predict
from salesflow.spark.curated import curated_path
from salesflow.spark.session import get_spark, stop_spark
from salesflow.spark.train import TrainInput, train
from salesflow.spark.warmup import WarmUp

__all__ = [
    "PredictFn",
    "PredictOutcome",
    "SparkEngine",
    "TrainFn",
    "inprocess_predictor",
    "lineage_path",
    "spark_engine",
    "spark_predictor",
]


class TrainFn(Protocol):
    """`salesflow.spark.train.train`'s signature."""

    def __call__(
        self,
        spark: Any,
        settings: Settings,
        inputs: Sequence[TrainInput],
        *,
        registry: ModelRegistry | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> Any: ...


@dataclass(frozen=True)
class PredictOutcome:
    """What a prediction produced: the model used, counts, the records when asked for JSON, the
    model's lineage, notes on what its metadata lacked, and input rows dropped (by reason, and
    each reason's rows and first line numbers)."""

    model_version: str
    rows: int
    unknown_stores: list[str] = field(default_factory=list)
    unknown_products: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] | None = None
    lineage: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    rows_dropped: dict[str, int] | None = None
    dropped: dict[str, dict[str, Any]] = field(default_factory=dict)


class PredictFn(Protocol):
    """Predict a local CSV with a model version (None: the active one).

    Writes a CSV to `csv_out` when given, else returns the records; one row per input row, or
    per store/product/month with `per_month`.
    """

    def __call__(
        self, source: Path, *, version: str | None, csv_out: Path | None, per_month: bool = False
    ) -> PredictOutcome: ...


@dataclass(frozen=True)
class SparkEngine:
    """What the job server's workers run: `session()` starts (or returns) the warm SparkSession,
    `stop` ends it; `train`, `predict` for jobs (Spark) and `predict_now` for small synchronous
    files (None: `predict`, on the session)."""

    session: Callable[[], Any]
    stop: Callable[[], None]
    train: TrainFn
    predict: PredictFn
    predict_now: PredictFn | None = None
    warm_up: WarmUp | None = None  # run once the session is up; stopped by the first job


def lineage_path(csv_out: Path) -> Path:
    """The sidecar holding the full lineage of a prediction CSV: `<file>.lineage.json`."""
    return csv_out.with_name(csv_out.name + ".lineage.json")


def _write_lineage(csv_out: Path, lineage: dict[str, Any]) -> None:
    target = lineage_path(csv_out)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(lineage, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, target)


def spark_predictor(
    settings: Settings, registry: ModelRegistry, session_fn: Callable[[], Any]
) -> PredictFn:
    """The real job predictor: `salesflow.spark.predict` on the process's session."""

    def run(
        source: Path, *, version: str | None, csv_out: Path | None, per_month: bool = False
    ) -> PredictOutcome:
        result = spark_predict.predict(
            session_fn(),
            settings,
            str(source),
            registry=registry,
            version=version,
            per_month=per_month,
        )
        records = None
        if csv_out is None:
            records = spark_predict.to_records(result.frame.drop(*LINEAGE_COLUMNS))
        else:
            spark_predict.write_csv(result.frame, csv_out)
            _write_lineage(csv_out, result.lineage)
        return PredictOutcome(
            model_version=result.version,
            rows=int(result.rows),
            unknown_stores=sorted(result.unknown_stores),
            unknown_products=sorted(result.unknown_products),
            records=records,
            lineage=result.lineage,
            notes=result.notes,
            rows_dropped=result.drops.ordered(),
            dropped=result.drops.to_dict(),
        )

    return run


def inprocess_predictor(forecasts: ForecastService, names_root: Path | None = None) -> PredictFn:
    """Small files without Spark: parsed in Python, scored by the warm in-process model; the
    names dimension under `names_root` fills the names a file lacks."""

    def run(
        source: Path, *, version: str | None, csv_out: Path | None, per_month: bool = False
    ) -> PredictOutcome:
        known = names.load(names_root) if names_root is not None else None
        result = predict_csv(forecasts, source, version, per_month=per_month, names=known)
        records = None
        if csv_out is None:
            records = result.records()
        else:
            result.write_csv(csv_out)
        return PredictOutcome(
            model_version=result.model_version,
            rows=len(result.rows),
            unknown_stores=result.unknown_stores,
            unknown_products=result.unknown_products,
            records=records,
            lineage=result.lineage,
            notes=result.notes,
            rows_dropped=result.rows_dropped,
            dropped=result.drops.to_dict(),
        )

    return run


def spark_engine(
    settings: Settings, registry: ModelRegistry, forecasts: ForecastService | None = None
) -> SparkEngine:
    """The real engine: one warm SparkSession per process, stopped at shutdown; small
    predictions in-process with `forecasts` (default: a new service on `registry`)."""

    def session() -> Any:
        return get_spark(settings)

    forecasts = forecasts or ForecastService(registry, history_root=curated_path(settings))
    return SparkEngine(
        session=session,
        stop=stop_spark,
        train=train,
        predict=spark_predictor(settings, registry, session),
        predict_now=inprocess_predictor(forecasts, settings.warehouse_path / "curated"),
        warm_up=WarmUp(settings, settings.jobs_jit_warmup_runs),
    )
