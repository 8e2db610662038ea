"""The curated monthly and daily histories as plain Python: actuals per month (or day) for one
series or totals, no Spark.

The training job adds one Parquet folder per upload under
`<warehouse>/curated/monthly/source_sha256=<part>/` with columns store_id, product_id, year, month
and quantity, and under `<warehouse>/curated/daily/...` with store_id, product_id, date and
quantity (salesflow.spark.curated); the ledger (salesflow.sales.ledger) names the live folders,
and only those are read. The same store/product/period can appear in several uploads (mode
append); it is summed here exactly as the training job's aggregate does. Days without
sales are not stored: the daily series is zero-filled between its first and last day, as the day
model's training fills it. Folders starting with "." (a write in
progress) or "_" and files starting with "_" or "." are skipped, as Spark skips them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from salesflow.errors import InputError
from salesflow.sales.ledger import live_folders

__all__ = [
    "ALL",
    "DailyHistory",
    "MonthlyHistory",
    "Series",
    "curated_root",
    "daily_root",
    "read_daily",
    "read_history",
    "read_monthly",
    "series_ids",
    "series_pairs",
]

#: The id that means "every store" or "every product" (totals).
ALL = "all"
#: Longest id accepted in a query; real ids are short, this only bounds what a caller can send.
MAX_ID_LENGTH = 200
#: Most days one daily answer carries (ten years): bounds the JSON for a long history.
MAX_DAYS = 3660
_COLUMNS = ["store_id", "product_id", "year", "month", "quantity"]
# Explicit schemas: old partitions may have been written with other integer widths.
_MONTHLY_SCHEMA = pa.schema(
    [
        ("store_id", pa.string()),
        ("product_id", pa.string()),
        ("year", pa.int32()),
        ("month", pa.int32()),
        ("quantity", pa.float64()),
    ]
)
_DAILY_SCHEMA = pa.schema(
    [
        ("store_id", pa.string()),
        ("product_id", pa.string()),
        ("date", pa.date32()),
        ("quantity", pa.float64()),
    ]
)


@dataclass(frozen=True)
class Series:
    """The store and product ids present in the history, sorted."""

    stores: list[str]
    products: list[str]


@dataclass(frozen=True)
class MonthlyHistory:
    """Actual quantities per month ("YYYY-MM", ascending) of one store/product, or totals."""

    store_id: str
    product_id: str
    months: list[str]
    quantities: list[float]

    def to_dict(self) -> dict[str, object]:
        return {
            "store_id": self.store_id,
            "product_id": self.product_id,
            "months": [
                {"month": m, "quantity": q}
                for m, q in zip(self.months, self.quantities, strict=True)
            ],
        }


@dataclass(frozen=True)
class DailyHistory:
    """Actual quantities per day ("YYYY-MM-DD", ascending, no gaps) of one store/product, or totals."""

    store_id: str
    product_id: str
    dates: list[str]
    quantities: list[float]

    def to_dict(self) -> dict[str, object]:
        return {
            "store_id": self.store_id,
            "product_id": self.product_id,
            "granularity": "day",
            "days": [
                {"date": d, "quantity": q} for d, q in zip(self.dates, self.quantities, strict=True)
            ],
        }


def curated_root(warehouse: Path) -> Path:
    """Where the training job keeps the curated monthly history inside a local warehouse folder."""
    return warehouse / "curated" / "monthly"


def daily_root(warehouse: Path) -> Path:
    """Where the training job keeps the curated daily history (granularity day or both)."""
    return warehouse / "curated" / "daily"


def _files(root: Path) -> list[str]:
    """The Parquet files of every live folder the ledger names."""
    if not root.is_dir():
        return []
    return sorted(
        str(f)
        for part in live_folders(root)
        if part.is_dir()
        for f in part.glob("*.parquet")
        if not f.name.startswith(("_", "."))
    )


def _dataset(root: Path, schema: pa.Schema = _MONTHLY_SCHEMA) -> ds.Dataset | None:
    files = _files(root)
    if not files:
        return None
    return ds.dataset(files, format="parquet", schema=schema)


def _series_filter(condition: pc.Expression, store_id: str, product_id: str) -> pc.Expression:
    if store_id != ALL:
        condition = condition & (pc.field("store_id") == store_id)
    if product_id != ALL:
        condition = condition & (pc.field("product_id") == product_id)
    return condition


def _check_id(name: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise InputError(f"{name} is empty: give an id or {ALL!r}")
    if len(value) > MAX_ID_LENGTH:
        raise InputError(f"{name} is longer than {MAX_ID_LENGTH} characters")
    return value


def read_monthly(root: Path, store_id: str = ALL, product_id: str = ALL) -> MonthlyHistory:
    """Monthly actuals of one store/product; `ALL` for either sums over every store or product.

    An id that is not in the history gives an empty series (not an error): the dashboard shows
    "no history" for it and may still show a forecast.
    """
    store_id = _check_id("store_id", store_id)
    product_id = _check_id("product_id", product_id)
    dataset = _dataset(root)
    if dataset is None:
        return MonthlyHistory(store_id, product_id, [], [])
    condition = pc.field("year").is_valid() & pc.field("month").is_valid()
    condition = _series_filter(condition, store_id, product_id)
    table = dataset.to_table(columns=_COLUMNS, filter=condition)
    totals = table.group_by(["year", "month"]).aggregate([("quantity", "sum")])
    rows = sorted(
        zip(
            totals["year"].to_pylist(),
            totals["month"].to_pylist(),
            totals["quantity_sum"].to_pylist(),
            strict=True,
        )
    )
    return MonthlyHistory(
        store_id,
        product_id,
        [f"{year:04d}-{month:02d}" for year, month, _ in rows],
        [float(quantity or 0.0) for _, _, quantity in rows],
    )


def read_daily(
    root: Path, store_id: str = ALL, product_id: str = ALL, last_days: int | None = None
) -> DailyHistory:
    """Daily actuals of one store/product (or totals), zero-filled from its first to its last day.

    `last_days` keeps only the most recent days (the dashboard draws a recent window); at most
    MAX_DAYS are returned either way. Unknown ids give an empty series, as `read_monthly` does.
    """
    store_id = _check_id("store_id", store_id)
    product_id = _check_id("product_id", product_id)
    if last_days is not None and not 1 <= last_days <= MAX_DAYS:
        raise InputError(f"last_days is {last_days}: give 1 to {MAX_DAYS} days")
    dataset = _dataset(root, _DAILY_SCHEMA)
    if dataset is None:
        return DailyHistory(store_id, product_id, [], [])
    condition = _series_filter(pc.field("date").is_valid(), store_id, product_id)
    table = dataset.to_table(columns=["date", "quantity"], filter=condition)
    totals = table.group_by(["date"]).aggregate([("quantity", "sum")])
    sold: dict[date, float] = {
        d: float(q or 0.0)
        for d, q in zip(totals["date"].to_pylist(), totals["quantity_sum"].to_pylist(), strict=True)
    }
    if not sold:
        return DailyHistory(store_id, product_id, [], [])
    last = max(sold)
    span = (last - min(sold)).days + 1
    keep = min(span, last_days or MAX_DAYS, MAX_DAYS)
    days = [last - timedelta(days=back) for back in range(keep - 1, -1, -1)]
    return DailyHistory(
        store_id, product_id, [d.isoformat() for d in days], [sold.get(d, 0.0) for d in days]
    )


def read_history(
    warehouse: Path,
    store_id: str = ALL,
    product_id: str = ALL,
    granularity: str = "month",
    last_days: int | None = None,
) -> MonthlyHistory | DailyHistory:
    """The actuals of one series (or totals) in a local warehouse folder: per month, or per day
    (granularity "day", the last `last_days`)."""
    if granularity == "day":
        return read_daily(daily_root(warehouse), store_id, product_id, last_days)
    if granularity != "month":
        raise InputError(f"granularity is {granularity!r}: give month or day")
    return read_monthly(curated_root(warehouse), store_id, product_id)


def _natural(value: str) -> tuple[int, int, str]:
    """Numeric ids in numeric order ("2" before "10"), then the rest alphabetically."""
    return (0, int(value), "") if value.isdigit() else (1, 0, value)


def series_ids(root: Path) -> Series:
    """Every store id and product id in the history (for the dashboard's pickers)."""
    dataset = _dataset(root)
    if dataset is None:
        return Series([], [])
    table = dataset.to_table(columns=["store_id", "product_id"])

    def distinct(column: str) -> list[str]:
        values = pc.unique(table[column].drop_null()).to_pylist()
        return sorted((str(v) for v in values), key=_natural)

    return Series(distinct("store_id"), distinct("product_id"))


def series_pairs(root: Path) -> list[tuple[str, str]]:
    """Every (store id, product id) pair the history holds a row for, in natural order."""
    dataset = _dataset(root)
    if dataset is None:
        return []
    table = dataset.to_table(columns=["store_id", "product_id"])
    pairs = table.group_by(["store_id", "product_id"]).aggregate([])
    found = zip(pairs["store_id"].to_pylist(), pairs["product_id"].to_pylist(), strict=True)
    return sorted(
        ((str(s), str(p)) for s, p in found if s is not None and p is not None),
        key=lambda pair: (_natural(pair[0]), _natural(pair[1])),
    )
