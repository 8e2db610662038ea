"""Predictions for a small sales CSV in-process: parse in Python, score with the warm model, no Spark.

The same semantics as `salesflow.spark.predict.predict` (a test holds them equal): the header
check, ids trimmed of blanks, the Spark job's date and quantity rules (`salesflow.sales.preview`),
rows with a missing id or a bad date dropped (and counted by reason), a bad or missing quantity
only blanking the actual, then one row per store, product and month with the quantities summed.
The answer keeps the user's rows (`salesflow.serving.prediction_rows`): one row per input row, in
the input's order; `per_month` gives the one-row-per-store/product/month shape instead.
Like Spark's CSV reader (`spark.read.read_sales`, multiline as by default), quotes follow RFC 4180
and a quoted field may hold a line break; a short record gets nulls for its missing fields and a
long one loses its extra fields; blank lines are skipped.
"""

from __future__ import annotations

import csv
import os
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from salesflow.errors import FieldTooLongError, ModelError, UnterminatedQuoteError
from salesflow.sales import names as names_table
from salesflow.sales.contract import HEADER_PROBE_BYTES, check_header, column_names
from salesflow.sales.preview import date_of, quantity_problem
from salesflow.sales.rules import open_quote_line
from salesflow.serving.model import (
    LINEAGE_COLUMNS,
    ModelFacts,
    bound,
    horizon_note,
    interval_columns,
    output_columns,
)
from salesflow.serving.prediction_rows import (
    DROPPED_COLUMN,
    Drops,
    answer_names,
    filled_names,
    refuse_empty,
    row_columns,
)
from salesflow.serving.service import ForecastService

__all__ = ["CsvPrediction", "MonthlyRows", "escape_formula_text", "predict_csv", "read_monthly"]

#: What Spark's `_text` trims from a field (a stray CR included).
_BLANKS = " \t\r\n"
#: Distinct date / quantity texts whose verdict is remembered (files repeat few values).
_CACHE_LIMIT = 10_000
#: A cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection").
_FORMULA_START = re.compile(r"[=+\-@\t\r]")
#: ...unless it is a plain number, such as a negative quantity.
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?")

Key = tuple[str, str, int, int]


def escape_formula_text(value: str) -> str:
    """A text cell a spreadsheet would run as a formula (= + - @ ...) gets a leading `'`."""
    if _FORMULA_START.match(value) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


@dataclass
class InputRow:
    """One input record as read (None for an empty or missing field), its first line, and its
    month's key (None: dropped, `reason` says why)."""

    fields: list[str | None]
    line: int
    key: Key | None
    reason: str | None


@dataclass
class MonthlyRows:
    """A sales file aggregated per store, product and month: keys sorted, actuals (None: none);
    the input's columns and rows when asked to keep them."""

    keys: list[Key]
    actual: list[float | None]
    rows_read: int
    drops: Drops
    columns: list[str] = field(default_factory=list)
    inputs: list[InputRow] = field(default_factory=list)

    @property
    def dropped(self) -> dict[str, int]:
        """Rows dropped per reason."""
        return dict(self.drops.counts)


def _quantity(text: str) -> float | None:
    """The quantity as the Spark job parses it; None when it is missing, bad or negative."""
    if quantity_problem(text):
        return None
    value = text.strip(_BLANKS).rstrip("fFdD")
    return float.fromhex(value) if "x" in value.lower() else float(value)


def _drop_reason(store: str, product: str, day: str) -> str | None:
    """Why a row cannot be scored (the first of the Spark job's checks that fails), or None."""
    if not store:
        return "missing_store_id"
    if not product:
        return "missing_product_id"
    return None if day else "bad_date"


class _Lines:
    """A file's lines for csv.reader, keeping those of the record being read (for its errors)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.record: list[str] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line: str = next(self.handle)
        self.record.append(line)
        return line


def _records(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """The data records with their first line (blank lines skipped). FieldTooLongError for a field over csv's limit
    (128 KiB), UnterminatedQuoteError for a quote still open at the end, each with its line."""
    # utf-8-sig drops a BOM; undecodable bytes become U+FFFD, as in Spark's reader.
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
        lines = _Lines(handle)
        reader = csv.reader(lines, delimiter=delimiter)
        first, last, last_first = 1, [], 1
        try:
            while (fields := next(reader, None)) is not None:
                last, lines.record, last_first = lines.record, [], first
                first = reader.line_num + 1
                if fields and last_first > 1:  # the header is record 1
                    yield last_first, fields
        except csv.Error:  # without `strict`, csv's only error: a field over its size limit
            raise FieldTooLongError(
                f"line {reader.line_num}: a field is longer than {csv.field_size_limit()} "
                "characters (is a closing quote missing?)"
            ) from None
        # The last record swallowed the rest of the file when one of its quotes never closed.
        if opened := open_quote_line(last, last_first, delimiter, strict=True):
            raise UnterminatedQuoteError(f"quote opened on line {opened} is never closed")


def read_monthly(path: Path, *, keep_rows: bool = False) -> MonthlyRows:
    """Parse, validate and aggregate a sales CSV (quantity optional); HeaderError when unusable.
    `keep_rows`: also keep every input row (for an answer per input row)."""
    with path.open("rb") as handle:
        header = check_header(handle.read(HEADER_PROBE_BYTES), require_quantity=False)
    columns = list(header.columns)
    at = {name: columns.index(name) for name in ("store_id", "product_id", "date")}
    quantity_at = columns.index("quantity") if "quantity" in columns else None
    dates: dict[str, str] = {}
    quantities: dict[str, float | None] = {}
    totals: dict[Key, float | None] = {}
    drops = Drops()
    inputs: list[InputRow] = []
    read = 0

    def cell(fields: list[str], index: int | None) -> str:
        return fields[index] if index is not None and index < len(fields) else ""

    for line, fields in _records(path, header.delimiter):
        read += 1
        store = cell(fields, at["store_id"]).strip(_BLANKS)
        product = cell(fields, at["product_id"]).strip(_BLANKS)
        date_text = cell(fields, at["date"])
        if (day := dates.get(date_text)) is None:
            day = date_of(date_text)
            if len(dates) < _CACHE_LIMIT:
                dates[date_text] = day
        reason = _drop_reason(store, product, day)
        if keep_rows:  # Spark's reader: a missing or empty field is null, extra fields are lost
            cells = [cell(fields, i) or None for i in range(len(columns))]
            inputs.append(InputRow(cells, line, None, reason))
        if reason:
            drops.add(reason, line)
            continue
        quantity_text = cell(fields, quantity_at)
        if quantity_text in quantities:
            quantity = quantities[quantity_text]
        else:
            quantity = _quantity(quantity_text)
            if len(quantities) < _CACHE_LIMIT:
                quantities[quantity_text] = quantity
        key = (store, product, int(day[:4]), int(day[5:7]))
        if keep_rows:
            inputs[-1].key = key
        total = totals.setdefault(key, None)  # Spark's sum: null only when no quantity is valid
        if quantity is not None:
            totals[key] = quantity if total is None else total + quantity
    keys = sorted(totals)
    names = column_names(header)
    return MonthlyRows(keys, [totals[k] for k in keys], read, drops, names, inputs)


@dataclass
class CsvPrediction:
    """Scored rows of a sales file (`columns` order: one per input row in its order, or per
    store/product/month sorted), with the model's lineage and the rows dropped."""

    model_version: str
    columns: list[str]
    rows: list[dict[str, Any]]
    lineage: dict[str, Any]
    unknown_stores: list[str]
    unknown_products: list[str]
    rows_read: int
    rows_dropped: dict[str, int]
    levels: list[str]
    notes: list[str] = field(default_factory=list)
    drops: Drops = field(default_factory=Drops)
    lineage_columns: tuple[str, ...] = LINEAGE_COLUMNS

    def records(self) -> list[dict[str, Any]]:
        """The rows without the per-row lineage columns (a JSON answer has `lineage` once)."""
        keep = [c for c in self.columns if c not in self.lineage_columns]
        return [{c: row[c] for c in keep} for row in self.rows]

    def write_csv(self, target: Path) -> Path:
        """Write the rows as one CSV file with a header, atomically (temp file, then rename)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.tmp-{secrets.token_hex(8)}"
        try:
            with tmp.open("w", encoding="utf-8", newline="") as out:
                writer = csv.writer(out, lineterminator="\n")
                writer.writerow(self.columns)
                for row in self.rows:
                    writer.writerow([_cell(row[c]) for c in self.columns])
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target


def _cell(value: Any) -> Any:
    """Spark's CSV forms: booleans as true/false, null as empty; risky text escaped."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return escape_formula_text(value)
    return value


def predict_csv(
    service: ForecastService,
    path: Path,
    version: str | None = None,
    *,
    per_month: bool = True,
    names: names_table.Names | None = None,
) -> CsvPrediction:
    """Score a sales CSV with the active model (or `version`), as the Spark predict path would:
    one row per store/product/month (`per_month`), else one per input row in its order, with the
    store and product names the input lacks from `names`. NothingToPredictError when every row is
    dropped."""
    monthly = read_monthly(path, keep_rows=not per_month)
    refuse_empty(monthly.rows_read, len(monthly.keys), monthly.drops)
    served = service.model(version)
    facts = served.facts
    if facts.granularity != "month":
        raise ModelError(
            f"model {facts.version} is a {facts.granularity} model: file predictions are monthly "
            "and need a month model; ask day forecasts with date=YYYY-MM-DD queries"
        )
    keys = monthly.keys
    scored = served.score(
        [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], [k[3] for k in keys]
    )
    columns = output_columns(facts.levels)
    trained_at = facts.lineage.get("trained_at")
    rows = []
    for i, (store, product, year, month) in enumerate(keys):
        predicted = bound(scored.predicted, i)  # None: outside a forecast table's horizon
        actual = monthly.actual[i]
        row: dict[str, Any] = {
            "store_id": store,
            "product_id": product,
            "year": year,
            "month": month,
            "period": f"{year:04d}-{month:02d}",
            "predicted_quantity": predicted,
        }
        for level in facts.levels:
            lo, hi = bound(scored.lower[level], i), bound(scored.upper[level], i)
            row.update(zip(interval_columns([level]), (lo, hi), strict=True))
        row.update(
            basis=str(scored.basis[i]),
            clipped=bool(scored.clipped[i]),
            actual_quantity=actual,
            error=None if actual is None or predicted is None else predicted - actual,
            unknown_store=bool(scored.unknown_store[i]),
            unknown_product=bool(scored.unknown_product[i]),
            model_version=facts.version,
            trained_at=trained_at,
        )
        rows.append(row)
    lineage_columns = LINEAGE_COLUMNS
    if not per_month:
        answers = answer_names(monthly.columns, facts.levels)
        columns = row_columns(monthly.columns, answers)
        rows = _per_input_row(monthly, dict(zip(keys, rows, strict=True)), answers, names)
        lineage_columns = tuple(answers[c] for c in LINEAGE_COLUMNS)
    return CsvPrediction(
        model_version=facts.version,
        columns=columns,
        rows=rows,
        lineage=facts.lineage,
        unknown_stores=sorted({k[0] for k, u in zip(keys, scored.unknown_store, strict=True) if u}),
        unknown_products=sorted(
            {k[1] for k, u in zip(keys, scored.unknown_product, strict=True) if u}
        ),
        rows_read=monthly.rows_read,
        rows_dropped=monthly.drops.ordered(),
        levels=list(facts.levels),
        notes=[*facts.notes, *_horizon_notes(served.facts, scored.basis.tolist())],
        drops=monthly.drops,
        lineage_columns=lineage_columns,
    )


def _per_input_row(
    monthly: MonthlyRows,
    by_key: dict[Key, dict[str, Any]],
    names: dict[str, str],
    known: names_table.Names | None,
) -> list[dict[str, Any]]:
    """One answer row per input row: its fields, the names it lacks (from `known`), then its
    month's answer (empty when dropped)."""
    filled = filled_names(monthly.columns)
    rows = []
    for one in monthly.inputs:
        row: dict[str, Any] = dict(zip(monthly.columns, one.fields, strict=True))
        for column, kind, _ in filled:
            ident = None if one.key is None else one.key[0] if kind == "stores" else one.key[1]
            row[column] = known.name_of(kind, ident) if known and ident else None
        scored = by_key[one.key] if one.key is not None else {}
        row.update({names[c]: scored.get(c) for c in names if c != DROPPED_COLUMN})
        row[names[DROPPED_COLUMN]] = one.reason
        rows.append(row)
    return rows


def _horizon_notes(facts: ModelFacts, basis: Sequence[str]) -> list[str]:
    """The horizon note when some rows fall outside a forecast table's horizon."""
    outside = facts.table is not None and "outside_horizon" in set(basis)
    return [horizon_note(facts)] if outside else []
