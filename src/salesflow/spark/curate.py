"""A training run's first step: read each sales file once and add it to the curated history.

header check -> read -> validate -> reject accounting -> clean -> aggregate per granularity ->
append to the curated monthly (and/or daily) history, once per file checksum. A file whose
checksum the history already holds is not read again: its manifest stands for it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from salesflow.errors import InputError, TooManyRejectsError
from salesflow.spark.curated import append_curated, curated_path, manifests
from salesflow.spark.predict import write_csv
from salesflow.spark.read import SalesSource, file_sha256, open_sales, read_sales
from salesflow.spark.train_context import SourceStats, TrainRun
from salesflow.spark.transforms import (
    DAY_KEYS,
    KEYS,
    aggregate_with_rejects,
    clean,
    rejected_rows,
    validate,
)

__all__ = ["TrainInput", "curate"]

log = logging.getLogger(__name__)

#: The aggregation keys of each granularity.
KEYS_OF = {"month": KEYS, "day": DAY_KEYS}


@dataclass(frozen=True)
class TrainInput:
    """One sales file to learn from: its URL (file:///, path or s3://), checksum and upload id."""

    url: str
    sha256: str | None = None
    upload_id: str | None = None


@dataclass
class _Read:
    """One file read in this run: its accepted rows per granularity and its statistics."""

    frames: dict[str, DataFrame] | None  # None: already in the curated history
    stats: SourceStats


def check_rejects(stats: SourceStats, limit: float) -> None:
    """Refuse a file with no data rows, or with more rejected rows than `limit` allows."""
    read, rejected = stats.rows_read, stats.rows_rejected
    if read == 0:
        raise InputError(f"{stats.url} has a header but no data rows")
    if rejected / read > limit:
        reasons = ", ".join(f"{r} {n}" for r, n in stats.rejects_by_reason.items())
        raise TooManyRejectsError(
            f"{rejected} of {read} rows rejected ({rejected / read * 100:.1f}%) > limit "
            f"{limit * 100:g}%: {reasons}; the rejected rows are in the job's rejects file",
            counts={
                "rows_read": read,
                "rows_rejected": rejected,
                "rejects_by_reason": dict(stats.rejects_by_reason),
                "rejects_url": stats.rejects_url,
            },
        )


def curate(run: TrainRun, inputs: Sequence[TrainInput], grains: Sequence[str]) -> list[SourceStats]:
    """Read every new file once, check its rejects, then append it to each granularity's history."""
    roots = {g: curated_path(run.settings, g) for g in grains}
    known = {g: {m["sha256"]: m for m in manifests(root)} for g, root in roots.items()}
    done: list[_Read] = []
    with run.timed("read_clean_aggregate"):
        for item in inputs:
            read = _read_once(run, item, grains, known, done)
            if not any(read is earlier for earlier in done):
                done.append(read)
        run.say("adding to the curated history")
        for read in done:
            if read.frames is not None:
                frames = read.frames
                stats = {k: v for k, v in read.stats.to_dict().items() if k != "appended"}
                added = [append_curated(roots[g], frames[g], stats) for g in grains]
                read.stats.appended = any(added)
    return [read.stats for read in done]


def _read_once(
    run: TrainRun,
    item: TrainInput,
    grains: Sequence[str],
    known: dict[str, dict[str, dict[str, Any]]],
    done: list[_Read],
) -> _Read:
    """This file's reading, or what stands for it when it needs none (see `_lookup`)."""
    if item.sha256 and (found := _lookup(run, item, item.sha256, grains, known, done)):
        return found  # known without touching the file
    # the header check comes first; with the upload's sha256, Spark reads a verified copy
    with open_sales(item.url, run.settings, sha256=item.sha256) as sales:
        path = str(sales.local_path) if sales.local_path else item.url
        sha256 = item.sha256 or file_sha256(path, run.settings)
        if item.sha256 is None and (found := _lookup(run, item, sha256, grains, known, done)):
            return found
        run.say(f"reading, validating and aggregating {item.url.rsplit('/', 1)[-1]}")
        frames, stats = _summarise(run, sales, item, sha256, grains)
    check_rejects(stats, run.settings.max_reject_fraction)
    return _Read(frames, stats)


def _lookup(
    run: TrainRun,
    item: TrainInput,
    sha256: str,
    grains: Sequence[str],
    known: dict[str, dict[str, dict[str, Any]]],
    done: list[_Read],
) -> _Read | None:
    """The same file read earlier in this run, or its manifest when every granularity's history
    holds it already; None when it is new."""
    earlier = next((read for read in done if read.stats.sha256 == sha256), None)
    if earlier is not None or any(sha256 not in by_sha for by_sha in known.values()):
        return earlier
    run.say(f"{item.url.rsplit('/', 1)[-1]} is already in the curated history")
    log.info("%s (sha256 %s) is already in the curated history", item.url, sha256)
    return _Read(None, SourceStats.from_manifest(known[grains[0]][sha256], item.url))


def _summarise(
    run: TrainRun, sales: SalesSource, item: TrainInput, sha256: str, grains: Sequence[str]
) -> tuple[dict[str, DataFrame], SourceStats]:
    """One read of the file: accepted rows per granularity (checkpointed) and reject accounting.

    With both granularities the validated rows are persisted and aggregated twice, per month
    exactly as a month-only run does (so its model is the same: the forest's bootstrap depends
    on row order) and per date.
    """
    settings = run.settings
    raw = read_sales(
        run.spark, sales.spark_path, sales.header, multiline=settings.spark_csv_multiline
    )
    cleaned = raw.transform(validate).transform(clean)
    several = len(grains) > 1
    if several:
        cleaned = cleaned.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        # Small (one row per store/product/period, one per reason) and used several times below;
        # a local checkpoint keeps AQE's coalescing, unlike cache() on the plan. It is eager, so
        # the rows no longer depend on a staged copy of the file once the caller's block ends.
        summaries = {
            g: cleaned.transform(aggregate_with_rejects, KEYS_OF[g]).localCheckpoint()
            for g in grains
        }
    finally:
        if several:
            cleaned.unpersist()
    stats = _stats(summaries[grains[0]], item, sha256)
    if stats.rows_rejected:  # the second, filtered pass, only when something was rejected
        target = settings.warehouse_path / "rejects" / sha256 / "rejects.csv"
        stats.rejects_url = write_csv(raw.transform(rejected_rows), target).as_uri()
    accepted_rows = F.col("reject_reason").isNull()
    frames = {g: summaries[g].filter(accepted_rows).select(*KEYS_OF[g], "quantity") for g in grains}
    return frames, stats


def _stats(summary: DataFrame, item: TrainInput, sha256: str) -> SourceStats:
    """Rows read, rejected (by reason) and aggregated, and the accepted date span, in one query."""
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
    return SourceStats(
        url=item.url,
        sha256=sha256,
        upload_id=item.upload_id,
        rows_read=sum(int(r["rows"]) for r in counts),
        rows_rejected=sum(by_reason.values()),
        rejects_by_reason=dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
        rejects_url=None,
        rows_aggregated=int(accepted["groups"]) if accepted else 0,
        first_date=accepted["first"].isoformat() if accepted else None,
        last_date=accepted["last"].isoformat() if accepted else None,
    )
