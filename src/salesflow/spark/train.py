"""The training job: sales files in, a new active model version (per granularity) out.

header check -> read -> validate -> reject accounting -> clean -> aggregate -> append to the curated
monthly (and/or daily) history (once per file checksum) -> per granularity: read the whole history
(days: zero-fill missing days) -> rolling-origin backtest (holdout metrics, intervals) -> score the
active version of that granularity on the same windows -> publish the model refitted on everything
(fitted and saved alongside the backtest, which it does not depend on); the
promotion gate decides whether the new version becomes the active one. With granularity `both`
the month model is trained first, then the day model from the same read of each file, and the day
model records the coherence of its daily forecasts with the month model's (spark/coherence.py).
A failed run creates no version and leaves the active models alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from salesflow.config import Settings, get_settings
from salesflow.errors import InputError, SalesflowError, TooManyRejectsError
from salesflow.registry import ModelRegistry
from salesflow.spark import backtest
from salesflow.spark.curated import append_curated, curated_path, manifests
from salesflow.spark.predict import write_csv
from salesflow.spark.read import SalesSource, file_sha256, open_sales, read_sales
from salesflow.spark.session import get_spark, input_bytes, input_categories
from salesflow.spark.train_granularity import (
    Fitted,
    Progress,
    TrainResult,
    timed,
    train_granularity,
)
from salesflow.spark.transforms import (
    DAY_KEYS,
    KEYS,
    aggregate_with_rejects,
    clean,
    rejected_rows,
    validate,
)

__all__ = ["TrainInput", "TrainResult", "granularities", "main", "train"]

log = logging.getLogger(__name__)

#: The aggregation keys of each granularity.
_KEYS_OF = {"month": KEYS, "day": DAY_KEYS}


@dataclass(frozen=True)
class TrainInput:
    """One sales file to learn from: its URL (file:///, path or s3://), checksum and upload id."""

    url: str
    sha256: str | None = None
    upload_id: str | None = None


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


def granularities(settings: Settings) -> tuple[str, ...]:
    """The granularities a run trains, in order: `both` is month then day."""
    return ("month", "day") if settings.granularity == "both" else (settings.granularity,)


def _summarise(
    spark: SparkSession,
    settings: Settings,
    sales: SalesSource,
    item: TrainInput,
    sha256: str,
    grains: Sequence[str] = ("month",),
) -> tuple[dict[str, DataFrame], dict[str, Any]]:
    """One read of the file: accepted rows per granularity (checkpointed) and reject accounting.

    With both granularities the validated rows are persisted and aggregated twice, per month
    exactly as a month-only run does (so its model is the same: the forest's bootstrap depends
    on row order) and per date.
    """
    raw = read_sales(spark, sales.spark_path, sales.header, multiline=settings.spark_csv_multiline)
    cleaned = raw.transform(validate).transform(clean)
    several = len(grains) > 1
    if several:
        cleaned = cleaned.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        # Small (one row per store/product/period, one per reason) and used several times below;
        # a local checkpoint keeps AQE's coalescing, unlike cache() on the plan. It is eager, so
        # the rows no longer depend on a staged copy of the file once the caller's block ends.
        summaries = {
            g: cleaned.transform(aggregate_with_rejects, _KEYS_OF[g]).localCheckpoint()
            for g in grains
        }
    finally:
        if several:
            cleaned.unpersist()
    summary = summaries[grains[0]]
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
    accepted_rows = F.col("reject_reason").isNull()
    frames = {
        g: summaries[g].filter(accepted_rows).select(*_KEYS_OF[g], "quantity") for g in grains
    }
    return frames, stats


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
    seasonal-naive forecast and the active version of the same granularity; `force` activates it
    anyway, `activate=False` never does. `fit_transform` alters every frame the candidate is
    fitted on (tests only). With settings.granularity `both` the result is the month run's, with
    the day run's result (and its coherence check) in `also`.
    """
    if not inputs:
        raise InputError("nothing to train on: give at least one sales file")
    started = time.perf_counter()
    registry = registry or ModelRegistry(settings.warehouse_path / "models")
    say: Progress = progress or (lambda _stage: None)
    timings: dict[str, float] = {}
    grains = granularities(settings)
    roots = {g: curated_path(settings, g) for g in grains}
    known_by = {g: {m["sha256"]: m for m in manifests(root)} for g, root in roots.items()}

    with timed(timings, "read_clean_aggregate"):
        pending: list[tuple[dict[str, DataFrame] | None, dict[str, Any]]] = []

        def skip(item: TrainInput, sha256: str) -> bool:
            """True (and noted) when this file is already curated or already in this run."""
            if any(stats["sha256"] == sha256 for _, stats in pending):
                return True
            if any(sha256 not in known for known in known_by.values()):
                return False
            say(f"{item.url.rsplit('/', 1)[-1]} is already in the curated history")
            log.info("%s (sha256 %s) is already in the curated history", item.url, sha256)
            manifest = known_by[grains[0]][sha256]
            pending.append((None, {**manifest, "url": item.url, "appended": False}))
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
                frames, stats = _summarise(spark, settings, sales, item, sha256, grains)
            _check_rejects(stats, settings.max_reject_fraction)
            pending.append((frames, stats))
        say("adding to the curated history")
        for new_frames, stats in pending:
            if new_frames is not None:
                added = [append_curated(roots[g], new_frames[g], stats) for g in grains]
                stats["appended"] = any(added)
    input_stats = [stats for _, stats in pending]

    results: list[TrainResult] = []
    month: Fitted | None = None
    for grain in grains:
        result, fitted = train_granularity(
            spark,
            settings,
            grain,
            roots[grain],
            input_stats,
            registry,
            say,
            timings if grain == grains[0] else {},
            actor=actor,
            activate=activate,
            force=force,
            fit_transform=fit_transform,
            month=month,
        )
        if grain == "month":
            month = fitted
        results.append(result)
    first = results[0]
    first.also = [r.to_dict() for r in results[1:]]
    first.duration_s = round(time.perf_counter() - started, 3)
    return first


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m salesflow.spark.train URL [URL...]`: train on sales files, print the result."""
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
            get_spark(
                settings,
                reads=input_bytes(args.urls),
                categories=input_categories(args.urls),
            ),
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
