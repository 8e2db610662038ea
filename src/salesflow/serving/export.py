"""Bulk forecast export: every store x product series of the history, the next N months, from one
month model, written as CSV or Parquet in bounded chunks.

`plan_export` checks the request (1-24 months, capped by a forecast table's horizon; at most
MAX_ROWS rows) before any scoring; `write_export` scores CHUNK_SERIES series at a time with the
vectorised `ServedModel.score`, so memory stays bounded whatever the number of series. The
horizon starts the month after the last month the model learned from (its `date_range`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from numpy.typing import NDArray

from salesflow.errors import ExportTooLargeError, HorizonError, InputError, ModelError
from salesflow.serving.model import ServedModel, interval_columns
from salesflow.serving.predict_csv import escape_formula_text
from salesflow.serving.service import ForecastService, parse_period
from salesflow.serving.table import level_columns, period_label

__all__ = [
    "CHUNK_SERIES",
    "DEFAULT_MONTHS",
    "FORMATS",
    "MAX_MONTHS",
    "MAX_ROWS",
    "ExportFormat",
    "ExportPlan",
    "export_columns",
    "plan_export",
    "write_export",
]

#: Longest horizon an export may ask for: two years of monthly forecasts.
MAX_MONTHS = 24
#: The horizon when none is asked (capped by a forecast table's), as the explorer draws.
DEFAULT_MONTHS = 12
#: Most rows one export writes (about 250 MB of CSV, a few seconds of scoring).
MAX_ROWS = 2_000_000
#: Series scored per chunk: 5,000 x 24 months keeps one chunk's arrays to a few MB.
CHUNK_SERIES = 5_000
FORMATS = ("csv", "parquet")
ExportFormat = Literal["csv", "parquet"]


def export_columns(levels: Sequence[str]) -> list[str]:
    """The export's columns, in order."""
    return [
        "store_id",
        "product_id",
        "period",
        "predicted_quantity",
        *interval_columns(levels),
        "basis",
        "clipped",
        "unknown_store",
        "unknown_product",
        "model_version",
    ]


@dataclass(frozen=True)
class ExportPlan:
    """What an export will write: which model, which series, which months (period indexes)."""

    served: ServedModel
    series: list[tuple[str, str]]
    first_index: int
    months: int

    @property
    def rows(self) -> int:
        return len(self.series) * self.months

    @property
    def periods(self) -> list[str]:
        """The months, "YYYY-MM", first to last."""
        return [period_label(self.first_index + i, "month") for i in range(self.months)]

    @property
    def columns(self) -> list[str]:
        return export_columns(self.served.facts.levels)


def _first_index(served: ServedModel) -> int:
    """The period index (year * 12 + month - 1) of the month after the model's last month."""
    facts = served.facts
    found = facts.lineage.get("date_range")
    last = found.get("last") if isinstance(found, dict) else None
    if last:
        year, month = parse_period(str(last))
        return year * 12 + month
    if facts.table is not None:
        return facts.table.first_period_index
    raise ModelError(f"model {facts.version} records no date range: its horizon is unknown")


def plan_export(
    service: ForecastService,
    series: list[tuple[str, str]],
    months: int | None = None,
    version: str | None = None,
) -> ExportPlan:
    """Check an export before any work: HorizonError for a horizon outside 1-MAX_MONTHS or past a
    forecast table's last month, ExportTooLargeError over MAX_ROWS rows, InputError with no series
    or a day model. No `months`: DEFAULT_MONTHS, or fewer when a forecast table holds fewer."""
    if months is not None and not 1 <= months <= MAX_MONTHS:
        raise HorizonError(f"months is {months}: give 1 to {MAX_MONTHS} months")
    served = service.model(version)
    facts = served.facts
    if facts.granularity != "month":
        raise InputError(
            f"model {facts.version} is a {facts.granularity} model: exports are monthly and need "
            "a month model"
        )
    first = _first_index(served)
    available = MAX_MONTHS
    if facts.table is not None:
        available = facts.table.last_period_index - first + 1
        if months is not None and months > available:
            raise HorizonError(
                f"model {facts.version} answers {facts.table.horizon('month')} from its forecast "
                f"table: at most {max(available, 0)} months from {period_label(first, 'month')}"
            )
    if months is None:
        months = max(1, min(DEFAULT_MONTHS, available))
    if not series:
        raise InputError("the history holds no series: upload sales and train first")
    plan = ExportPlan(served, series, first, months)
    if plan.rows > MAX_ROWS:
        raise ExportTooLargeError(
            f"{len(series):,} series x {months} months is {plan.rows:,} rows; at most "
            f"{MAX_ROWS:,} per export: ask for fewer months"
        )
    return plan


def _nullable(values: NDArray[np.float64]) -> pa.Array:
    return pa.array(values, type=pa.float64(), mask=np.isnan(values))


def _batches(plan: ExportPlan, escape: bool) -> Iterator[pa.RecordBatch]:
    """The export's rows, CHUNK_SERIES series at a time (ids formula-escaped for CSV)."""
    facts = plan.served.facts
    indexes = np.arange(plan.first_index, plan.first_index + plan.months, dtype=np.int64)
    labels = plan.periods
    for start in range(0, len(plan.series), CHUNK_SERIES):
        chunk = plan.series[start : start + CHUNK_SERIES]
        stores = [s for s, _ in chunk for _ in labels]
        products = [p for _, p in chunk for _ in labels]
        index = np.tile(indexes, len(chunk))
        scored = plan.served.score(
            stores, products, (index // 12).tolist(), (index % 12 + 1).tolist()
        )
        shown = (lambda v: escape_formula_text(v)) if escape else (lambda v: v)
        arrays: dict[str, pa.Array] = {
            "store_id": pa.array([shown(s) for s in stores], pa.string()),
            "product_id": pa.array([shown(p) for p in products], pa.string()),
            "period": pa.array(labels * len(chunk), pa.string()),
            "predicted_quantity": _nullable(scored.predicted),
        }
        for level in facts.levels:
            low, high = level_columns(level)
            arrays[low] = _nullable(scored.lower[level])
            arrays[high] = _nullable(scored.upper[level])
        arrays["basis"] = pa.array(scored.basis.tolist(), pa.string())
        arrays["clipped"] = pa.array(scored.clipped)
        arrays["unknown_store"] = pa.array(scored.unknown_store)
        arrays["unknown_product"] = pa.array(scored.unknown_product)
        arrays["model_version"] = pa.array([facts.version] * len(stores), pa.string())
        yield pa.RecordBatch.from_pydict({c: arrays[c] for c in plan.columns})


def write_export(plan: ExportPlan, target: Path, fmt: ExportFormat) -> Path:
    """Write the plan's rows to `target` as CSV (header, nulls empty) or Parquet, atomically."""
    if fmt not in FORMATS:
        raise InputError(f"format is {fmt!r}: give csv or parquet")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{secrets.token_hex(8)}"
    try:
        batches = _batches(plan, escape=fmt == "csv")
        first = next(batches)
        if fmt == "csv":
            options = pacsv.WriteOptions(quoting_style="needed")
            with pacsv.CSVWriter(tmp, first.schema, write_options=options) as writer:
                writer.write_batch(first)
                for batch in batches:
                    writer.write_batch(batch)
        else:
            with pq.ParquetWriter(tmp, first.schema) as parquet:
                parquet.write_batch(first)
                for batch in batches:
                    parquet.write_batch(batch)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
