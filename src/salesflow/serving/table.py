"""A version's forecast table: forecasts written at training time, answered by lookup.

Winners that are not one Spark forest (per-series statistical models, combinations, recursive
lags) cannot be walked in-process, so training writes their forecasts for the horizon beside the
model and serving looks them up. The contract:

A version folder may hold `forecasts.parquet`, one row per series and period:

    store_id            string   not null
    product_id          string   not null
    period_index        int32    not null: months since year 0, year * 12 + month - 1 (as
                                 `spark.transforms.with_period_index`); for a day model, days
                                 since 1970-01-01 (as `spark.transforms.with_day_index`)
    predicted_quantity  float64  finite and >= 0
    lo_<L>, hi_<L>      float64  the bounds of interval level L (lo_80, hi_80 for 0.8), lo <= hi;
                                 NaN: no bound

(store_id, product_id, period_index) is unique. The version's metadata.json names the table:

    "forecast_table": {"file": "forecasts.parquet", "model": "<winning candidate name>",
                       "first_period_index": int, "last_period_index": int,
                       "levels": ["0.8", "0.95"]}

where the indexes are the table's smallest and largest `period_index` and the levels those of
its lo_/hi_ columns. A version with a table may have no `pipeline/` folder; its metadata must
carry the `fallback` means, which answer ids the table does not hold. `write_table` writes a table
that meets the contract and returns its metadata block.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray

from salesflow.errors import ModelError

__all__ = [
    "KEY_COLUMNS",
    "TABLE_FILE",
    "ForecastTable",
    "Lookup",
    "TableSpec",
    "day_indexes",
    "level_columns",
    "month_indexes",
    "period_label",
    "write_table",
]

#: The table's file name inside a version folder.
TABLE_FILE = "forecasts.parquet"
#: The columns that identify a row.
KEY_COLUMNS: tuple[str, ...] = ("store_id", "product_id", "period_index")
_BOUND = re.compile(r"(lo|hi)_([0-9]+(?:\.[0-9]+)?)")
_EPOCH = date(1970, 1, 1).toordinal()

Float = NDArray[np.float64]
Bool = NDArray[np.bool_]
Int = NDArray[np.int64]


def level_columns(level: str) -> tuple[str, str]:
    """The lower and upper bound columns of a level: ("lo_80", "hi_80") for "0.8"."""
    tag = f"{float(level) * 100:g}"
    return f"lo_{tag}", f"hi_{tag}"


def month_indexes(years: Sequence[int], months: Sequence[int]) -> Int:
    """Months since year 0 of each (year, month): year * 12 + month - 1."""
    out: Int = np.asarray(years, dtype=np.int64) * 12 + np.asarray(months, dtype=np.int64) - 1
    return out


def day_indexes(dates: Sequence[date]) -> Int:
    """Days since 1970-01-01 of each date (Spark's unix_date)."""
    return np.fromiter((d.toordinal() - _EPOCH for d in dates), np.int64, count=len(dates))


def period_label(index: int, granularity: str) -> str:
    """A period index as "YYYY-MM" (month) or "YYYY-MM-DD" (day)."""
    if granularity == "day":
        return date.fromordinal(index + _EPOCH).isoformat()
    year, month = divmod(index, 12)
    return f"{year:04d}-{month + 1:02d}"


@dataclass(frozen=True)
class TableSpec:
    """The metadata's "forecast_table" block: which file, which model, which periods and levels."""

    file: str
    model: str
    first_period_index: int
    last_period_index: int
    levels: tuple[str, ...]

    @classmethod
    def parse(cls, raw: Any, version: str) -> TableSpec | None:
        """The block of a version's metadata; None when absent, ModelError when malformed."""
        if raw is None:
            return None
        try:
            file, model = str(raw["file"]), str(raw["model"])
            first, last = raw["first_period_index"], raw["last_period_index"]
            levels = tuple(str(level) for level in raw["levels"])
            ok = (
                file == Path(file).name
                and file not in ("", ".", "..")
                and all(isinstance(i, int) and not isinstance(i, bool) for i in (first, last))
                and first <= last
                and all(0 < float(level) < 1 for level in levels)
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"model {version}: forecast_table lacks or mistypes {exc}") from exc
        if not ok:
            raise ModelError(
                f"model {version}: forecast_table {raw!r} breaks the contract (a plain file name, "
                "first_period_index <= last_period_index, levels between 0 and 1)"
            )
        return cls(file, model, first, last, levels)

    def to_dict(self) -> dict[str, Any]:
        """The block as metadata.json holds it."""
        return {
            "file": self.file,
            "model": self.model,
            "first_period_index": self.first_period_index,
            "last_period_index": self.last_period_index,
            "levels": list(self.levels),
        }

    def horizon(self, granularity: str) -> str:
        """The answerable periods, e.g. "2024-01 to 2024-12"."""
        first = period_label(self.first_period_index, granularity)
        return f"{first} to {period_label(self.last_period_index, granularity)}"


@dataclass
class Lookup:
    """Per asked row: the table's forecast and bounds (NaN where not found) and what is known."""

    predicted: Float
    lower: dict[str, Float]
    upper: dict[str, Float]
    found: Bool
    known_series: Bool
    known_store: Bool
    known_product: Bool


def _levels_of(names: Sequence[str]) -> tuple[str, ...]:
    """The levels of a table's lo_/hi_ columns, sorted; ModelError when a bound lacks its pair."""
    sides: dict[str, set[str]] = {}
    for name in names:
        if match := _BOUND.fullmatch(name):
            try:
                level = str(Decimal(match[2]) / 100)
            except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
                continue
            sides.setdefault(level, set()).add(match[1])
    unpaired = sorted(level for level, found in sides.items() if found != {"lo", "hi"})
    if unpaired:
        raise ModelError(f"forecast table: levels {unpaired} lack a lo_ or hi_ column")
    return tuple(sorted(sides, key=float))


class ForecastTable:
    """A loaded forecast table indexed for vectorised lookups (sorted int64 keys, no Python loop
    over the table's rows)."""

    def __init__(self, table: pa.Table) -> None:
        """Check `table` against the contract and build the index; ModelError says what is wrong."""
        names = list(table.column_names)
        missing = [c for c in (*KEY_COLUMNS, "predicted_quantity") if c not in names]
        if missing:
            raise ModelError(f"forecast table: columns {missing} missing; it has {names}")
        if table.num_rows == 0:
            raise ModelError("forecast table: no rows")
        nulls = [c for c in (*KEY_COLUMNS, "predicted_quantity") if table.column(c).null_count]
        if nulls:
            raise ModelError(f"forecast table: nulls in columns {nulls}")
        self.levels = _levels_of(names)
        self.rows = int(table.num_rows)
        stores, products = (_dictionary(table, c) for c in ("store_id", "product_id"))
        self._stores = {s: i for i, s in enumerate(stores.dictionary.to_pylist())}
        self._products = {p: i for i, p in enumerate(products.dictionary.to_pylist())}
        period = _numbers(table, "period_index", np.int64)
        self.first_period_index, self.last_period_index = int(period.min()), int(period.max())
        self._span = self.last_period_index - self.first_period_index + 1
        series = stores.indices.to_numpy(zero_copy_only=False).astype(np.int64) * len(
            self._products
        ) + products.indices.to_numpy(zero_copy_only=False)
        keys = series * self._span + (period - self.first_period_index)
        # Stable sort: near-instant when the file is in key order, as write_table leaves it.
        self._order = np.argsort(keys, kind="stable")
        self._keys = keys[self._order]
        if (same := np.flatnonzero(self._keys[1:] == self._keys[:-1])).size:
            row = int(self._order[same[0]])
            raise ModelError(
                f"forecast table: row {row} repeats store {table['store_id'][row].as_py()!r}, "
                f"product {table['product_id'][row].as_py()!r}, period_index {period[row]}"
            )
        series_sorted = self._keys // self._span
        self._series = series_sorted[np.r_[True, series_sorted[1:] != series_sorted[:-1]]]
        self._predicted = _numbers(table, "predicted_quantity", np.float64)
        if (bad := np.flatnonzero(~(self._predicted >= 0) | ~np.isfinite(self._predicted))).size:
            raise ModelError(
                f"forecast table: row {bad[0]} predicts {self._predicted[bad[0]]}, "
                "not a finite quantity >= 0"
            )
        self._bounds: dict[str, tuple[Float, Float]] = {}
        for level in self.levels:
            lo, hi = (_numbers(table, c, np.float64) for c in level_columns(level))
            if (bad := np.flatnonzero(lo > hi)).size:
                raise ModelError(f"forecast table: row {bad[0]}, level {level}: lo > hi")
            self._bounds[level] = (lo, hi)

    @classmethod
    def load(cls, path: Path, expect: TableSpec | None = None) -> ForecastTable:
        """Read a table file; with `expect`, check it holds the periods and levels it names."""
        try:  # ids read as dictionaries: half the time of plain strings
            table = pq.read_table(path, read_dictionary=["store_id", "product_id"])
        except (OSError, pa.ArrowException) as exc:
            raise ModelError(f"forecast table {path} unreadable: {exc}") from exc
        loaded = cls(table.unify_dictionaries())  # one dictionary per column across row groups
        if expect is not None:
            held = (loaded.first_period_index, loaded.last_period_index, loaded.levels)
            named = (expect.first_period_index, expect.last_period_index, expect.levels)
            if held != named:
                raise ModelError(
                    f"forecast table {path} holds (first, last, levels) {held}; "
                    f"its metadata says {named}"
                )
        return loaded

    def spec(self, model: str, file: str = TABLE_FILE) -> TableSpec:
        """The metadata block describing this table."""
        first, last = self.first_period_index, self.last_period_index
        return TableSpec(file, model, first, last, self.levels)

    def lookup(
        self,
        store_ids: Sequence[str | None],
        product_ids: Sequence[str | None],
        period_indexes: Sequence[int] | Int,
    ) -> Lookup:
        """The table's row for each (store, product, period), found or not, vectorised."""
        n = len(store_ids)
        store = np.fromiter((self._stores.get(s, -1) for s in store_ids), np.int64, count=n)
        product = np.fromiter((self._products.get(p, -1) for p in product_ids), np.int64, count=n)
        known = (store >= 0) & (product >= 0)
        series = np.where(known, store * len(self._products) + product, -1)
        known_series = known & _member(self._series, series)
        offset = np.asarray(period_indexes, dtype=np.int64) - self.first_period_index
        asked = known_series & (offset >= 0) & (offset < self._span)
        found = asked & _member(self._keys, series * self._span + offset)
        rows = self._order[np.searchsorted(self._keys, (series * self._span + offset)[found])]
        predicted = np.full(n, np.nan)
        predicted[found] = self._predicted[rows]
        lower, upper = {}, {}
        for level, (lo, hi) in self._bounds.items():
            lower[level], upper[level] = np.full(n, np.nan), np.full(n, np.nan)
            lower[level][found], upper[level][found] = lo[rows], hi[rows]
        return Lookup(predicted, lower, upper, found, known_series, store >= 0, product >= 0)


def _member(sorted_keys: Int, keys: Int) -> Bool:
    """True where a key is in `sorted_keys`."""
    at = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    hit: Bool = sorted_keys[at] == keys
    return hit


def _dictionary(table: pa.Table, column: str) -> pa.DictionaryArray:
    """A string column as one dictionary array (codes in order of first appearance)."""
    values = table.column(column).combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode() if values.type.value_type != pa.string() else values
    if not pa.types.is_dictionary(values.type):
        values = values.cast(pa.string()).dictionary_encode()
    return values


def _numbers(table: pa.Table, column: str, dtype: type[np.generic]) -> NDArray[Any]:
    """A numeric column as a numpy array (nulls as NaN for floats)."""
    values = table.column(column).combine_chunks().cast(pa.from_numpy_dtype(dtype))
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=dtype)


def _contract_table(data: pa.Table | Mapping[str, Any] | Any) -> pa.Table:
    """`data` (a pyarrow Table, a mapping of columns, or a pandas DataFrame) in the contract's
    columns and types; other columns are left out."""
    table = data if isinstance(data, pa.Table) else pa.table(data)
    names = list(table.column_names)
    missing = [c for c in (*KEY_COLUMNS, "predicted_quantity") if c not in names]
    if missing:
        raise ModelError(f"forecast table: columns {missing} missing; it has {names}")
    bounds = [c for level in _levels_of(names) for c in level_columns(level)]
    types = {"store_id": pa.string(), "product_id": pa.string(), "period_index": pa.int32()}
    fields = [pa.field(c, types.get(c, pa.float64())) for c in (*KEY_COLUMNS, "predicted_quantity")]
    schema = pa.schema([*fields, *(pa.field(c, pa.float64()) for c in bounds)])
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ModelError(f"forecast table: a column does not fit the contract: {exc}") from exc


def write_table(path: Path, data: pa.Table | Mapping[str, Any] | Any, *, model: str) -> TableSpec:
    """Write forecasts as a contract table at `path` atomically (temp file, then rename).

    `data`: a pyarrow Table, a mapping of column -> values, or a pandas DataFrame with the
    contract's columns. Returns the metadata block to store as `metadata["forecast_table"]`;
    ModelError (nothing written) when the data breaks the contract.
    """
    # Key order, so that loading sorts an already-sorted array (see ForecastTable.__init__).
    table = _contract_table(data).sort_by([(c, "ascending") for c in KEY_COLUMNS])
    spec = ForecastTable(table).spec(model, path.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{secrets.token_hex(8)}"
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return spec
