"""A training run's first step: read each sales file once and add it to the curated history.

header check -> read -> validate -> reject accounting -> clean -> aggregate per month and per day
-> add to the curated history under the overlap policy (salesflow.spark.history_write), once per
file checksum. A file whose checksum the history holds already is not read again: its ledger
entry stands for it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from salesflow.errors import InputError, TooManyRejectsError
from salesflow.sales import ledger
from salesflow.sales.names import Kind
from salesflow.sales.overlap import check_mode
from salesflow.spark.history_write import NewUpload, add_upload
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

#: The aggregation keys of each granularity; every file is kept per month and per day.
KEYS_OF = {"month": KEYS, "day": DAY_KEYS}
_GRAINS = ("month", "day")


@dataclass(frozen=True)
class TrainInput:
    """One sales file to learn from: its URL (file:///, path or s3://), checksum, upload id and
    history mode (replace, append or reject; None: settings.history_mode)."""

    url: str
    sha256: str | None = None
    upload_id: str | None = None
    mode: str | None = None


@dataclass
class _Read:
    """One file read in this run: its accepted rows per granularity and its statistics."""

    frames: dict[str, DataFrame] | None  # None: already in the curated history
    stats: SourceStats
    mode: ledger.Mode = "replace"
    names: dict[Kind, list[tuple[str, str, str]]] = field(default_factory=dict)


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


def curate(run: TrainRun, inputs: Sequence[TrainInput]) -> list[SourceStats]:
    """Read every new file once, check its rejects, then add it to the curated history."""
    book = ledger.load(run.curated)
    done: list[_Read] = []
    with run.timed("read_clean_aggregate"):
        for item in inputs:
            read = _read_once(run, item, book, done)
            if not any(read is earlier for earlier in done):
                done.append(read)
        run.say("adding to the curated history")
        for read in done:
            if read.frames is not None:
                _add(run, read)
    return [read.stats for read in done]


def _add(run: TrainRun, read: _Read) -> None:
    """Add one read file to the history under its mode; its stats say what it overlapped."""
    assert read.frames is not None
    stats = read.stats
    entry = ledger.Entry(
        id=ledger.entry_id(stats.upload_id, stats.sha256),
        sha256=stats.sha256,
        upload_id=stats.upload_id,
        url=stats.url,
        added_at=ledger.now(),
        mode=read.mode,
        rows_read=stats.rows_read,
        rows_rejected=stats.rows_rejected,
    )
    new = NewUpload(entry, read.frames["day"], read.frames["month"], read.names)
    added = add_upload(run.spark, run.settings, run.curated, new, read.mode)
    stats.appended = added.entry is not None
    stats.overlaps = [o.to_dict() for o in added.overlaps]
    for overlap in added.overlaps:
        run.say(f"{overlap.action} {overlap.rows} rows of upload {overlap.upload}")


def _read_once(run: TrainRun, item: TrainInput, book: ledger.Ledger, done: list[_Read]) -> _Read:
    """This file's reading, or what stands for it when it needs none (see `_lookup`)."""
    mode = check_mode(item.mode or run.settings.history_mode)
    if item.sha256 and (found := _lookup(run, item, item.sha256, book, done)):
        return found  # known without touching the file
    # the header check comes first; with the upload's sha256, Spark reads a verified copy
    with open_sales(item.url, run.settings, sha256=item.sha256) as sales:
        path = str(sales.local_path) if sales.local_path else item.url
        sha256 = item.sha256 or file_sha256(path, run.settings)
        if item.sha256 is None and (found := _lookup(run, item, sha256, book, done)):
            return found
        run.say(f"reading, validating and aggregating {item.url.rsplit('/', 1)[-1]}")
        frames, stats, seen = _summarise(run, sales, item, sha256)
    stats.mode = mode
    check_rejects(stats, run.settings.max_reject_fraction)
    return _Read(frames, stats, mode, seen)


def _lookup(
    run: TrainRun, item: TrainInput, sha256: str, book: ledger.Ledger, done: list[_Read]
) -> _Read | None:
    """The same file read earlier in this run, or its ledger entry when the history holds it
    already; None when it is new."""
    earlier = next((read for read in done if read.stats.sha256 == sha256), None)
    entry = book.holding(sha256)
    if earlier is not None or entry is None:
        return earlier
    run.say(f"{item.url.rsplit('/', 1)[-1]} is already in the curated history")
    log.info("%s (sha256 %s) is already in the curated history", item.url, sha256)
    return _Read(None, SourceStats.from_entry(entry, item.url))


def _summarise(
    run: TrainRun, sales: SalesSource, item: TrainInput, sha256: str
) -> tuple[dict[str, DataFrame], SourceStats, dict[Kind, list[tuple[str, str, str]]]]:
    """One read of the file: accepted rows per granularity (checkpointed) and reject accounting.

    The validated rows are persisted and aggregated twice: per month, exactly as the monthly
    history always was (the forest's bootstrap depends on row order), and per date (the store x
    day cells the overlap policy works on), with the names the dimension keeps.
    """
    grains = _GRAINS
    settings = run.settings
    raw = read_sales(
        run.spark, sales.spark_path, sales.header, multiline=settings.spark_csv_multiline
    )
    validated = raw.transform(validate).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        # Small (one row per store/product/period, one per reason) and used several times below;
        # a local checkpoint keeps AQE's coalescing, unlike cache() on the plan. It is eager, so
        # the rows no longer depend on a staged copy of the file once the caller's block ends.
        summaries = {
            "month": validated.transform(clean)
            .transform(aggregate_with_rejects, KEYS)
            .localCheckpoint(),
            # per day from the validated rows, which still have the names (the dimension's)
            "day": validated.transform(
                aggregate_with_rejects, DAY_KEYS, names=True
            ).localCheckpoint(),
        }
    finally:
        validated.unpersist()
    stats = _stats(summaries[grains[0]], item, sha256)
    if stats.rows_rejected:  # the second, filtered pass, only when something was rejected
        target = settings.warehouse_path / "rejects" / sha256 / "rejects.csv"
        stats.rejects_url = write_csv(raw.transform(rejected_rows), target).as_uri()
    accepted_rows = F.col("reject_reason").isNull()
    frames = {g: summaries[g].filter(accepted_rows).select(*KEYS_OF[g], "quantity") for g in grains}
    return frames, stats, names_of(summaries["day"].filter(accepted_rows))


def names_of(daily: DataFrame) -> dict[Kind, list[tuple[str, str, str]]]:
    """Each store's and product's name on its latest accepted day, (id, name, YYYY-MM-DD), from
    the accepted rows per store, product and day, in one query (per store and per product)."""
    rows = (
        daily.groupingSets([["store_id"], ["product_id"]], "store_id", "product_id")
        .agg(
            F.max_by("store_name", "last_date").alias("store_name"),
            F.max_by("product_name", "last_date").alias("product_name"),
            F.max("last_date").alias("day"),
        )
        .collect()
    )
    found: dict[Kind, list[tuple[str, str, str]]] = {"stores": [], "products": []}
    for r in rows:
        if r["store_id"] is not None and r["store_name"] is not None:
            found["stores"].append((r["store_id"], r["store_name"], r["day"].isoformat()))
        elif r["product_id"] is not None and r["product_name"] is not None:
            found["products"].append((r["product_id"], r["product_name"], r["day"].isoformat()))
    return found


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
