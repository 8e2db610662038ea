"""Adding one upload to the curated history under the overlap policy (salesflow.sales.overlap).

find the live rows in the (store, day) cells the upload covers -> decide (replace, append, or
refuse) -> write the earlier uploads' remaining rows (replace) and the upload's own rows as new
folders -> replace the ledger. Everything is done with the ledger locked; nothing is visible to
readers until the ledger names the new folders, so a crash leaves the history before or after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from salesflow import faults
from salesflow.config import Settings
from salesflow.sales import ledger, names
from salesflow.sales.names import Kind
from salesflow.sales.overlap import Overlap, decide
from salesflow.spark.curated import monthly_of, read_parts, write_part
from salesflow.spark.transforms import DAY_KEYS, KEYS

__all__ = ["Added", "add_upload", "overlaps"]

_CELL = ["store_id", "date"]


@dataclass(frozen=True)
class Added:
    """What adding an upload did: its entry, and what it overlapped (with the action taken)."""

    entry: ledger.Entry | None  # None: the same file was in the history already
    overlaps: list[Overlap]


def overlaps(existing: DataFrame, cells: DataFrame) -> DataFrame:
    """Per stored folder (`source_sha256`), its rows in `cells`: rows, cells, stores, days."""
    return (
        existing.join(cells, _CELL, "left_semi")
        .groupBy("source_sha256")
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.countDistinct(*_CELL).alias("cells"),
            F.sort_array(F.collect_set("store_id")).alias("stores"),
            F.min("date").alias("first_date"),
            F.max("date").alias("last_date"),
        )
    )


def _span(daily: DataFrame) -> tuple[int, list[str], str | None, str | None]:
    """Rows, stores and first and last day of rows per store, product and day."""
    row = daily.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sort_array(F.collect_set("store_id")).alias("stores"),
        F.min("date").alias("first"),
        F.max("date").alias("last"),
    ).collect()[0]
    first, last = row["first"], row["last"]
    return (
        int(row["rows"]),
        list(row["stores"] or []),
        first.isoformat() if first else None,
        last.isoformat() if last else None,
    )


@dataclass(frozen=True)
class NewUpload:
    """An upload's accepted rows, ready to join the history."""

    entry: ledger.Entry  # its entry (counts filled in by add_upload)
    daily: DataFrame  # store_id, product_id, date, quantity
    monthly: DataFrame  # store_id, product_id, year, month, quantity
    names: dict[Kind, list[tuple[str, str, str]]] = field(default_factory=dict)  # id, name, day


def add_upload(
    spark: SparkSession, settings: Settings, curated: Path, new: NewUpload, mode: ledger.Mode
) -> Added:
    """Add `new` to the history under `mode`; an OverlapError (mode reject) changes nothing."""
    with ledger.locked(curated) as book:
        if book.holding(new.entry.sha256) is not None:
            return Added(None, [])
        daily_root = curated / ledger.GRAIN_FOLDERS["day"]
        existing = read_parts(spark, daily_root, "day")
        cells = new.daily.select(*_CELL).distinct()
        by_part = {e.parts["day"]: e for e in book.live() if "day" in e.parts}
        found = [  # no query when the history holds no rows per day yet (the first upload)
            (by_part[r["source_sha256"]], r)
            for r in (overlaps(existing, cells).collect() if by_part else [])
            if r["source_sha256"] in by_part
        ]
        decided = decide(
            mode,
            [Overlap(e.id, r["rows"], r["cells"], list(r["stores"]), *_days(r)) for e, r in found],
            new.entry.url.rsplit("/", 1)[-1],
        )
        if mode == "replace":
            for (entry, _), overlap in zip(found, decided, strict=True):
                _trim(curated, existing, cells, entry, overlap, new.entry.id)
        entry = new.entry
        entry.rows, entry.stores, entry.first_date, entry.last_date = _span(new.daily)
        entry.rows_added = entry.rows
        entry.parts = {
            "day": write_part(
                curated, "day", new.daily.select(*DAY_KEYS, "quantity"), entry.sha256
            ),
            "month": write_part(
                curated, "month", new.monthly.select(*KEYS, "quantity"), entry.sha256
            ),
        }
        book.entries.append(entry)
        faults.reached(settings, "curate.before_commit")
        ledger.save(curated, book)
        ledger.sweep(curated, book)
        if new.names:  # after the ledger: names seen in an upload the history holds
            dimension = names.load(curated)
            for kind, seen in new.names.items():
                dimension.add(kind, seen)
            names.save(curated, dimension)
    return Added(entry, decided)


def _days(row: Row) -> tuple[str, str]:
    return row["first_date"].isoformat(), row["last_date"].isoformat()


def _trim(
    curated: Path,
    existing: DataFrame,
    cells: DataFrame,
    entry: ledger.Entry,
    overlap: Overlap,
    by: str,
) -> None:
    """Rewrite `entry`'s rows without the cells the new upload covers (new folders), and record
    the supersession on it; an entry left without rows keeps no folder."""
    kept = (
        existing.filter(F.col("source_sha256") == entry.parts["day"])
        .drop("source_sha256")
        .join(cells, _CELL, "left_anti")
        .localCheckpoint()
    )
    entry.superseded.append(
        ledger.Supersession(
            by,
            overlap.rows,
            overlap.cells,
            overlap.stores,
            overlap.first_date,
            overlap.last_date,
        )
    )
    entry.rows, entry.stores, entry.first_date, entry.last_date = _span(kept)
    if entry.rows == 0:
        entry.parts = {}
        return
    entry.parts = {
        "day": write_part(curated, "day", kept.select(*DAY_KEYS, "quantity"), entry.sha256),
        "month": write_part(curated, "month", monthly_of(kept), entry.sha256),
    }
