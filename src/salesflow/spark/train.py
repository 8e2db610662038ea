"""The training job: sales files in, a new active model version out.

header check -> read -> validate -> reject accounting -> clean -> aggregate -> append to the curated
monthly history (once per file checksum) -> read the whole history -> rolling-origin backtest
(holdout metrics, intervals) -> score the active version on the same windows -> refit on
everything -> publish; the promotion gate decides whether the new version becomes the active one.
A failed run creates no version and leaves the active model alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from salesflow.config import Settings
from salesflow.errors import ConfigurationError, InputError, SalesflowError, TooManyRejectsError
from salesflow.registry import ModelRegistry
from salesflow.spark import backtest
from salesflow.spark.curated import append_curated, curated_path, manifests, read_history
from salesflow.spark.pipeline import (
    HistoryShape,
    build_pipeline,
    evaluate,
    fallback_statistics,
    feature_importances,
    pipeline_parameters,
)
from salesflow.spark.predict import model_labels, write_csv
from salesflow.spark.promotion import gate
from salesflow.spark.read import SalesSource, file_sha256, open_sales, read_sales
from salesflow.spark.transforms import (
    KEYS,
    aggregate_with_rejects,
    clean,
    rejected_rows,
    validate,
    with_period_index,
)

__all__ = ["TrainInput", "TrainResult", "curated_path", "main", "train"]

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainInput:
    """One sales file to learn from: its URL (file:///, path or s3://), checksum and upload id."""

    url: str
    sha256: str | None = None
    upload_id: str | None = None


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = round(timings.get(stage, 0.0) + time.perf_counter() - start, 3)


def _percent(share: float) -> str:
    return f"{share * 100:.1f}%"


def _check_rejects(stats: dict[str, Any], limit: float) -> None:
    read, rejected = stats["rows_read"], stats["rows_rejected"]
    if read == 0:
        raise InputError(f"{stats['url']} has a header but no data rows")
    if rejected / read > limit:
        reasons = ", ".join(f"{r} {n}" for r, n in stats["rejects_by_reason"].items())
        raise TooManyRejectsError(
            f"{rejected} of {read} rows rejected ({_percent(rejected / read)}) > limit "
            f"{limit * 100:g}%: {reasons}; see {stats['rejects_url']}"
        )


def _summarise(
    spark: SparkSession, settings: Settings, sales: SalesSource, item: TrainInput, sha256: str
) -> tuple[DataFrame, dict[str, Any]]:
    """One pass over the file: accepted monthly rows (checkpointed) and the reject accounting."""
    raw = read_sales(spark, sales.spark_path, sales.header, multiline=settings.spark_csv_multiline)
    # Small (one row per store/product/month, one per reason) and used several times below;
    # a local checkpoint keeps AQE's coalescing, unlike cache() on the plan. It is eager, so the
    # rows no longer depend on a staged copy of the file once the caller's block ends.
    summary = (
        raw.transform(validate).transform(clean).transform(aggregate_with_rejects).localCheckpoint()
    )
    counts = (
        summary.groupBy("reject_reason")
        .agg(
            F.sum("rows").alias("rows"),
            F.min("first_date").alias("first"),
            F.max("last_date").alias("last"),
            F.count(F.lit(1)).alias("groups"),
        )
        .collect()
    )
    by_reason = {r["reject_reason"]: int(r["rows"]) for r in counts if r["reject_reason"]}
    accepted = next((r for r in counts if r["reject_reason"] is None), None)
    stats: dict[str, Any] = {
        "url": item.url,
        "sha256": sha256,
        "upload_id": item.upload_id,
        "rows_read": sum(int(r["rows"]) for r in counts),
        "rows_rejected": sum(by_reason.values()),
        "rejects_by_reason": dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
        "rejects_url": None,
        "rows_aggregated": int(accepted["groups"]) if accepted else 0,
        "first_date": accepted["first"].isoformat() if accepted else None,
        "last_date": accepted["last"].isoformat() if accepted else None,
    }
    if by_reason:  # the second, filtered pass, only when something was rejected
        target = settings.warehouse_path / "rejects" / sha256 / "rejects.csv"
        stats["rejects_url"] = write_csv(raw.transform(rejected_rows), target).as_uri()
    monthly = summary.filter(F.col("reject_reason").isNull()).select(*KEYS, "quantity")
    return monthly, stats


def _metadata(
    spark: SparkSession,
    settings: Settings,
    model: PipelineModel,
    shape: HistoryShape,
    metrics: dict[str, Any],
    input_stats: list[dict[str, Any]],
    root: Path,
    extra: dict[str, Any],
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
        "parameters": pipeline_parameters(settings, shape.stores, shape.products),
        "metrics": metrics,
        "spark_version": spark.version,
        "training_sources": sorted(m["sha256"] for m in sources),
        "stores": stores,
        "products": products,
        "granularity": settings.granularity,
        "feature_importances": feature_importances(model),
        **extra,
    }


def _failure_point(spark: SparkSession, settings: Settings, step: str) -> None:
    """Fail a Spark task at `step` if settings.crash_point names it (fault tests only).

    A task that fails on an executor, not a Python raise: the job server meets the same kind of
    error (a Spark job aborted by a failed task) that a crashing executor gives it.
    """
    if settings.crash_point != step:
        return
    log.warning("crash point %s reached: failing a Spark task", step)
    # `id >= 0` keeps the optimiser from folding raise_error into a driver-side constant.
    failing = F.when(F.col("id") >= 0, F.raise_error(F.lit(f"simulated executor failure ({step})")))
    spark.range(1).select(failing.alias("never")).collect()


def train(
    spark: SparkSession,
    settings: Settings,
    inputs: Sequence[TrainInput],
    *,
    registry: ModelRegistry | None = None,
    progress: Progress | None = None,
    actor: str = "salesflow.train",
    activate: bool = True,
    force: bool = False,
    fit_transform: backtest.FitTransform | None = None,
) -> TrainResult:
    """Learn from `inputs` plus the curated history; publish a new version, active if it passes.

    The promotion gate (salesflow.spark.promotion) activates the version when its backtest beats the
    seasonal-naive forecast and the active version; `force` activates it anyway, `activate=False`
    never does. `fit_transform` alters every frame the candidate is fitted on (tests only).
    """
    if not inputs:
        raise InputError("nothing to train on: give at least one sales file")
    if settings.granularity != "month":
        raise ConfigurationError(f"granularity {settings.granularity!r} is not supported yet")
    started = time.perf_counter()
    registry = registry or ModelRegistry(settings.warehouse_path / "models")
    say: Progress = progress or (lambda _stage: None)
    timings: dict[str, float] = {}
    root = curated_path(settings)
    known = {m["sha256"]: m for m in manifests(root)}

    with _timed(timings, "read_clean_aggregate"):
        pending: list[tuple[DataFrame | None, dict[str, Any]]] = []

        def skip(item: TrainInput, sha256: str) -> bool:
            """True (and noted) when this file is already curated or already in this run."""
            if any(stats["sha256"] == sha256 for _, stats in pending):
                return True
            if sha256 not in known:
                return False
            say(f"{item.url.rsplit('/', 1)[-1]} is already in the curated history")
            log.info("%s (sha256 %s) is already in the curated history", item.url, sha256)
            pending.append((None, {**known[sha256], "url": item.url, "appended": False}))
            return True

        for item in inputs:
            if item.sha256 and skip(item, item.sha256):
                continue  # known without touching the file
            with open_sales(item.url, settings) as sales:  # the header check comes first
                sha256 = item.sha256 or file_sha256(
                    str(sales.local_path) if sales.local_path else item.url, settings
                )
                if item.sha256 is None and skip(item, sha256):
                    continue
                say(f"reading, validating and aggregating {item.url.rsplit('/', 1)[-1]}")
                monthly, stats = _summarise(spark, settings, sales, item, sha256)
            _check_rejects(stats, settings.max_reject_fraction)
            pending.append((monthly, stats))
        say("adding to the curated history")
        for new_rows, stats in pending:
            if new_rows is not None:
                stats["appended"] = append_curated(root, new_rows, stats)
        history = read_history(spark, root)
        shape = HistoryShape.of(history)
        if shape.rows == 0:
            raise InputError("no accepted rows to train on")

    with _timed(timings, "evaluate"):
        windows, horizon = settings.backtest_windows, settings.backtest_horizon
        say(f"backtesting {windows} windows of {horizon} months")
        params = pipeline_parameters(settings, shape.stores, shape.products)
        prepared = backtest.prepare(history, shape, windows, horizon)
        scored = backtest.run(prepared, params, fit_transform)
        summary = backtest.summary(scored, horizon=horizon)
        metrics = backtest.holdout_metrics(scored, settings.holdout_months, horizon)
        if metrics is None:  # the holdout is not made of whole windows: one more fit
            say(f"evaluating on the last {settings.holdout_months} months")
            metrics = evaluate(history, settings, shape, fit_transform)
        active = registry.active()
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
    with _timed(timings, "fit"):
        say("fitting the final model on all data")
        frame = (
            history
            if fit_transform is None
            else fit_transform(history.transform(with_period_index))
        )
        model = build_pipeline(settings, shape.stores, shape.products).fit(frame)
    with _timed(timings, "save"):
        say("saving the model")
        input_stats = [stats for _, stats in pending]
        extra = {
            "backtest": summary,
            "intervals": backtest.intervals(scored, settings.interval_levels),
            "fallback": fallback_statistics(history),
            "promotion": promotion,
        }
        metadata = _metadata(spark, settings, model, shape, metrics, input_stats, root, extra)
        with registry.staging() as staged:
            model.write().save(str(staged / "pipeline"))
            _failure_point(spark, settings, "train.before_publish")
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
    )
    log.info(
        "trained model %s in %.1f s (%s: %s): %s",
        result.version,
        result.duration_s,
        "active" if result.promoted else "candidate",
        result.promotion["reason"],
        metrics,
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m salesflow.spark.train URL [URL...]`: train on sales files, print the result."""
    from salesflow.config import get_settings
    from salesflow.spark.session import get_spark

    parser = argparse.ArgumentParser(
        prog="python -m salesflow.spark.train", description=main.__doc__
    )
    parser.add_argument("urls", nargs="+", help="sales CSVs: paths, file:// or s3:// URLs")
    parser.add_argument(
        "--force", action="store_true", help="activate the new version even if the gate says no"
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    try:
        result = train(
            get_spark(settings),
            settings,
            [TrainInput(url) for url in args.urls],
            progress=lambda stage: print(f"... {stage}", file=sys.stderr),
            force=args.force,
        )
    except SalesflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
